package bench

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
)

// verifyShow is a show of 2 rows of 10 seats: A-1..A-10, B-1..B-10.
var verifyShow = ShowSpec{ID: "v", Rows: []RowSpec{{Label: "A", Seats: 10}, {Label: "B", Seats: 10}}}

// vrec is a record of user in state, with seats.
func vrec(id, user string, state RecordState, ref string, seats ...string) Record {
	return Record{ID: id, User: user, State: state, PaymentRef: ref, Seats: seats}
}

// vhold is an acknowledged hold.
func vhold(id, user string, seats ...string) Hold { return Hold{ID: id, User: user, Seats: seats} }

func TestVerify(t *testing.T) {
	// A clean store: h1 booked, h2 held, h3 expired, h4 released, and what
	// the clients saw of it.
	clean := []Record{
		vrec("h1", "u1", StateBooked, "pay-h1", "A-1", "A-2"),
		vrec("h2", "u2", StateHeld, "", "A-3"),
		vrec("h3", "u3", StateExpired, "", "A-1"),
		vrec("h4", "u4", StateReleased, "", "A-3", "A-4"),
	}
	cleanAcks := Acks{
		Holds:    []Hold{vhold("h1", "u1", "A-2", "A-1"), vhold("h2", "u2", "A-3"), vhold("h3", "u3", "A-1")},
		Confirms: map[string]string{"h1": "pay-h1"},
	}
	with := func(extra ...Record) []Record { return append(slices.Clone(clean), extra...) }
	without := func(id string) []Record {
		return slices.DeleteFunc(slices.Clone(clean), func(r Record) bool { return r.ID == id })
	}
	replace := func(r Record) []Record {
		out := slices.Clone(clean)
		for i := range out {
			if out[i].ID == r.ID {
				out[i] = r
			}
		}
		return out
	}
	bigShow := ShowSpec{ID: "big", Rows: []RowSpec{{Label: "A", Seats: 20}}}
	tiny := ShowSpec{ID: "tiny", Rows: []RowSpec{{Label: "A", Seats: 2}}}

	tests := []struct {
		name    string
		show    ShowSpec
		records []Record
		acks    Acks
		durable bool
		want    []string // kinds of violations, sorted; none: verified
	}{
		{name: "clean", records: clean, acks: cleanAcks, durable: true},
		{name: "clean, volatile holds", records: clean, acks: cleanAcks},
		{name: "no acks", records: clean, durable: true},
		{name: "empty store", durable: true},
		{name: "booked twice", records: with(vrec("x", "u9", StateBooked, "pay-x", "A-2")), acks: cleanAcks, durable: true,
			want: []string{ViolationDoubleBooking}},
		{name: "held twice", records: with(vrec("x", "u9", StateHeld, "", "B-1", "A-3")), acks: cleanAcks, durable: true,
			want: []string{ViolationDoubleBooking}},
		{name: "held over booked", records: with(vrec("x", "u9", StateHeld, "", "A-1")), acks: cleanAcks, durable: true,
			want: []string{ViolationDoubleBooking}},
		{name: "ended reservations don't claim", records: with(vrec("x", "u9", StateExpired, "", "A-1"), vrec("y", "u9", StateReleased, "", "A-3")),
			acks: cleanAcks, durable: true},
		{name: "oversold", show: tiny, records: []Record{
			vrec("a", "u1", StateBooked, "p", "A-1", "A-2"), vrec("b", "u2", StateBooked, "p", "A-1")},
			want: []string{ViolationDoubleBooking, ViolationOversold}},
		{name: "unknown seat", records: with(vrec("x", "u9", StateHeld, "", "C-1")), acks: cleanAcks, durable: true,
			want: []string{ViolationUnknownSeat}},
		{name: "unknown seat of an ended reservation", records: with(vrec("x", "u9", StateExpired, "", "A-11")), acks: cleanAcks, durable: true,
			want: []string{ViolationUnknownSeat}},
		{name: "lost hold", records: without("h2"), acks: cleanAcks, durable: true,
			want: []string{ViolationLostHold}},
		{name: "lost expired hold", records: without("h3"), acks: cleanAcks, durable: true,
			want: []string{ViolationLostHold}},
		{name: "volatile hold may be lost", records: without("h2"), acks: cleanAcks},
		{name: "volatile confirmed hold may not be lost", records: without("h1"), acks: cleanAcks,
			want: []string{ViolationLostConfirm, ViolationLostHold}},
		{name: "hold of another user", records: replace(vrec("h2", "u7", StateHeld, "", "A-3")), acks: cleanAcks, durable: true,
			want: []string{ViolationHoldMismatch}},
		{name: "hold of other seats", records: replace(vrec("h2", "u2", StateHeld, "", "A-3", "A-4")), acks: cleanAcks, durable: true,
			want: []string{ViolationHoldMismatch}},
		{name: "confirm not booked", records: replace(vrec("h1", "u1", StateExpired, "", "A-1", "A-2")), acks: cleanAcks, durable: true,
			want: []string{ViolationLostConfirm}},
		{name: "confirm with another payment", records: replace(vrec("h1", "u1", StateBooked, "pay-other", "A-1", "A-2")), acks: cleanAcks, durable: true,
			want: []string{ViolationConfirmMismatch}},
		{name: "confirm of other seats", records: replace(vrec("h1", "u1", StateBooked, "pay-h1", "A-1", "A-5")), acks: cleanAcks, durable: true,
			want: []string{ViolationConfirmMismatch, ViolationHoldMismatch}},
		{name: "confirm of other seats, volatile holds", records: replace(vrec("h1", "u1", StateBooked, "pay-h1", "A-1", "A-5")), acks: cleanAcks,
			want: []string{ViolationConfirmMismatch, ViolationHoldMismatch}},
		{name: "confirm without its hold acked", records: clean, acks: Acks{Confirms: map[string]string{"h1": "pay-h1", "h9": "pay-h9"}}, durable: true,
			want: []string{ViolationLostConfirm}},
		{name: "user over the limit", records: with(
			vrec("x", "u1", StateHeld, "", "B-1", "B-2", "B-3", "B-4", "B-5"),
			vrec("y", "u1", StateBooked, "p", "B-6", "B-7", "B-8", "B-9")), acks: cleanAcks, durable: true,
			want: []string{ViolationUserLimit}},
		{name: "user at the limit, ended ones aside", records: with(
			vrec("x", "u1", StateHeld, "", "B-1", "B-2", "B-3", "B-4"),
			vrec("y", "u1", StateBooked, "p", "B-6", "B-7", "B-8", "B-9"),
			vrec("z", "u1", StateExpired, "", "B-10")), acks: cleanAcks, durable: true},
		{name: "record of no seat", records: with(vrec("x", "u9", StateExpired, "")), acks: cleanAcks, durable: true,
			want: []string{ViolationBadRecord}},
		{name: "record of 11 seats", show: bigShow, records: []Record{
			vrec("x", "u9", StateExpired, "", "A-1", "A-2", "A-3", "A-4", "A-5", "A-6", "A-7", "A-8", "A-9", "A-10", "A-11")},
			want: []string{ViolationBadRecord}},
		{name: "record with a seat twice", records: with(vrec("x", "u9", StateHeld, "", "B-1", "B-1")), acks: cleanAcks, durable: true,
			want: []string{ViolationBadRecord}},
		{name: "record in an unknown state", records: with(vrec("x", "u9", "lost", "", "B-1")), acks: cleanAcks, durable: true,
			want: []string{ViolationBadRecord}},
		{name: "record ID twice", records: with(vrec("h3", "u3", StateExpired, "", "B-1")), acks: cleanAcks, durable: true,
			want: []string{ViolationBadRecord}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			show := tt.show
			if show.ID == "" {
				show = verifyShow
			}
			v := Verify(show, tt.records, tt.acks, tt.durable)
			got := slices.Sorted(maps.Keys(v.ByKind))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("violation kinds %q, want %q; %s", got, tt.want, v)
			}
			if v.OK != (len(tt.want) == 0) || v.Verified() != v.OK {
				t.Fatalf("OK %v, Verified() %v with %d violations", v.OK, v.Verified(), v.ViolationCount)
			}
			if len(v.Violations) != v.ViolationCount {
				t.Fatalf("%d violation lines, count %d", len(v.Violations), v.ViolationCount)
			}
			for _, line := range v.Violations {
				kind, _, _ := strings.Cut(line, ": ")
				if !slices.Contains(tt.want, kind) {
					t.Fatalf("violation %q of unexpected kind", line)
				}
			}
			if tt.want == nil && !strings.HasPrefix(v.String(), "VERIFIED: ") {
				t.Fatalf("String() = %q", v)
			}
			if tt.want != nil && !strings.HasPrefix(v.String(), fmt.Sprintf("VIOLATIONS (%d): %s: ", v.ViolationCount, v.Violations[0][:strings.Index(v.Violations[0], ":")])) {
				t.Fatalf("String() = %q", v)
			}
		})
	}
}

func TestVerifyCounts(t *testing.T) {
	records := []Record{
		vrec("h1", "u1", StateBooked, "p1", "A-1", "A-2"),
		vrec("h2", "u2", StateHeld, "", "A-3"),
		vrec("h3", "u3", StateHeld, "", "A-4", "A-5", "A-6"),
		vrec("h4", "u4", StateExpired, "", "A-7"),
	}
	acks := Acks{
		Holds:    []Hold{vhold("h1", "u1", "A-1", "A-2"), vhold("h2", "u2", "A-3"), vhold("h4", "u4", "A-7")},
		Confirms: map[string]string{"h1": "p1"},
	}
	want := VerifyCounts{Records: 4, LiveHolds: 2, Bookings: 1, BookedSeats: 2, HeldSeats: 4, Capacity: 20,
		AckedHolds: 3, AckedConfirms: 1, CheckedHolds: 3}
	if v := Verify(verifyShow, records, acks, true); !v.OK || v.Counts != want {
		t.Fatalf("durable: %+v, want %+v; %s", v.Counts, want, v)
	}
	want.CheckedHolds = 1 // only the confirmed one
	if v := Verify(verifyShow, records, acks, false); !v.OK || v.Counts != want {
		t.Fatalf("volatile: %+v, want %+v; %s", v.Counts, want, v)
	}
}

func TestVerifyCapsViolations(t *testing.T) {
	show := ShowSpec{ID: "s", Rows: []RowSpec{{Label: "A", Seats: 200}}}
	var records []Record
	for i := 1; i <= 60; i++ {
		seat := SeatID("A", i)
		records = append(records, vrec(fmt.Sprint("a", i), fmt.Sprint("ua", i), StateBooked, "p", seat),
			vrec(fmt.Sprint("b", i), fmt.Sprint("ub", i), StateBooked, "p", seat))
	}
	v := Verify(show, records, Acks{}, true)
	if v.OK || v.ViolationCount != 60 || len(v.Violations) != MaxViolations || v.ByKind[ViolationDoubleBooking] != 60 {
		t.Fatalf("count %d, %d lines, by kind %v", v.ViolationCount, len(v.Violations), v.ByKind)
	}
	s := v.String()
	if !strings.HasPrefix(s, "VIOLATIONS (60): double booking: seat A-1 ") || !strings.HasSuffix(s, "; and 57 more") {
		t.Fatalf("String() = %q", s)
	}
}

func TestVerificationMerge(t *testing.T) {
	ok := Verify(verifyShow, []Record{vrec("h1", "u1", StateBooked, "p", "A-1")}, Acks{Holds: []Hold{vhold("h1", "u1", "A-1")}}, true)
	bad := Verify(verifyShow, []Record{vrec("x", "u1", StateBooked, "p", "A-1"), vrec("y", "u2", StateHeld, "", "A-1")}, Acks{}, true)
	m := ok.Merge(ok)
	if !m.OK || m.Counts.Records != 2 || m.Counts.Capacity != 40 || m.Counts.AckedHolds != 2 || m.ViolationCount != 0 {
		t.Fatalf("ok+ok: %+v", m)
	}
	m = ok.Merge(bad).Merge(bad)
	if m.OK || m.ViolationCount != 2 || len(m.Violations) != 2 || m.ByKind[ViolationDoubleBooking] != 2 || m.Counts.Records != 5 {
		t.Fatalf("ok+bad+bad: %+v", m)
	}
	if len(bad.Violations) != 1 || bad.ByKind[ViolationDoubleBooking] != 1 {
		t.Fatalf("merging changed its operand: %+v", bad)
	}

	var many Verification
	for i := range MaxViolations {
		many.Add(fmt.Sprintf("%s: %d", ViolationLostHold, i))
	}
	if m := many.Merge(bad); m.ViolationCount != MaxViolations+1 || len(m.Violations) != MaxViolations || m.ByKind[ViolationLostHold] != MaxViolations {
		t.Fatalf("capped merge: count %d, %d lines, %v", m.ViolationCount, len(m.Violations), m.ByKind)
	}
}

func TestVerificationAdd(t *testing.T) {
	v := Verify(verifyShow, nil, Acks{}, true)
	v.Add()
	if !v.OK {
		t.Fatalf("adding nothing: %s", v)
	}
	v.Add(ViolationClaimMismatch + ": seat A-1 of live reservation x has no claim")
	if v.OK || v.ByKind[ViolationClaimMismatch] != 1 || !strings.HasPrefix(v.String(), "VIOLATIONS (1): claim mismatch: ") {
		t.Fatalf("after Add: %s", v)
	}
}

// TestVerificationReport checks that the reports understand a
// Verification, as it is and read back from JSON.
func TestVerificationReport(t *testing.T) {
	for _, v := range []Verification{
		Verify(verifyShow, nil, Acks{}, true),
		Verify(verifyShow, []Record{vrec("x", "u1", StateBooked, "p", "A-1"), vrec("y", "u2", StateBooked, "p", "A-1")}, Acks{}, true),
	} {
		line, passed, known := verdictOf(v)
		if !known || passed != v.OK || line != v.String() {
			t.Fatalf("verdictOf(%s) = %q, %v, %v", v, line, passed, known)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var back map[string]any
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if _, passed, known := verdictOf(back); !known || passed != v.OK {
			t.Fatalf("verdictOf(%s) = %v, %v", b, passed, known)
		}
	}
}

func TestAckLogConcurrent(t *testing.T) {
	var l AckLog
	if a := l.Acks(); len(a.Holds) != 0 || len(a.Confirms) != 0 {
		t.Fatalf("zero AckLog: %+v", a)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				id := fmt.Sprintf("h%d-%d", g, i)
				l.Hold(vhold(id, "u", "A-1"))
				if i%2 == 0 {
					l.Confirm(id, "pay-"+id)
				}
				_ = l.Acks()
			}
		})
	}
	wg.Wait()
	a := l.Acks()
	if len(a.Holds) != 800 || len(a.Confirms) != 400 || a.Confirms["h3-42"] != "pay-h3-42" {
		t.Fatalf("%d holds, %d confirms", len(a.Holds), len(a.Confirms))
	}
	l.Confirm("late", "p")
	if _, ok := a.Confirms["late"]; ok {
		t.Fatal("Acks shares its map with the log")
	}
}
