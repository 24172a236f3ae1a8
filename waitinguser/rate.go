package waitinguser

import "time"

// turnRate remembers the times of the last turns.
type turnRate struct {
	at [32]time.Time // a ring: at[(n-1)%len] is the newest
	n  int           // turns recorded, all time
}

func (r *turnRate) record(now time.Time) {
	r.at[r.n%len(r.at)] = now
	r.n++
}

// interval returns the mean time between the remembered turns, or false
// with fewer than two of them or none apart.
func (r *turnRate) interval() (time.Duration, bool) {
	k := min(r.n, len(r.at))
	if k < 2 {
		return 0, false
	}
	newest := r.at[(r.n-1)%len(r.at)]
	oldest := r.at[(r.n-k)%len(r.at)]
	span := newest.Sub(oldest)
	if span <= 0 {
		return 0, false
	}
	return span / time.Duration(k-1), true
}
