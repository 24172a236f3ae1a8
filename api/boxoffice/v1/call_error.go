package boxofficev1

import "strings"

// seatsTakenMessage begins the message of a SEATS_TAKEN refusal; the
// taken seat IDs follow, joined by commas.
const seatsTakenMessage = "SEATS_TAKEN: seats taken: "

// CompactSeatsTaken returns the compact SEATS_TAKEN answer of a hold of
// seatIDs whose seats taken are taken (a subsequence of seatIDs, in request
// order), and false if taken is not one or seatIDs is too long for the mask.
func CompactSeatsTaken[S ~string](code int32, seatIDs []string, taken []S) (*CallError, bool) {
	if len(seatIDs) > 32 || len(taken) == 0 {
		return nil, false
	}
	var mask uint32
	j := 0
	for i, id := range seatIDs {
		if j < len(taken) && string(taken[j]) == id {
			mask |= 1 << i
			j++
		}
	}
	if j < len(taken) {
		return nil, false
	}
	return &CallError{Code: code, Reason: "SEATS_TAKEN", TakenSeats: mask}, true
}

// SeatsTaken returns the seats a SEATS_TAKEN answer to a hold of seatIDs
// names, in request order: from taken_seats if it is compact, else from its
// metadata.
func (e *CallError) SeatsTaken(seatIDs []string) []string {
	if e.GetTakenSeats() == 0 {
		if s := e.GetMetadata()["seats"]; s != "" {
			return strings.Split(s, ",")
		}
		return nil
	}
	var ids []string
	for i, id := range seatIDs {
		if i < 32 && e.GetTakenSeats()&(1<<i) != 0 {
			ids = append(ids, id)
		}
	}
	return ids
}

// Expanded returns e as the unary RPC answers it: a compact SEATS_TAKEN
// answer to a hold of seatIDs with its message and metadata filled in; any
// other answer is e itself.
func (e *CallError) Expanded(seatIDs []string) *CallError {
	if e.GetTakenSeats() == 0 || e.GetMessage() != "" {
		return e
	}
	list := strings.Join(e.SeatsTaken(seatIDs), ",")
	return &CallError{Code: e.GetCode(), Reason: e.GetReason(), Message: seatsTakenMessage + list, Metadata: map[string]string{"seats": list}}
}
