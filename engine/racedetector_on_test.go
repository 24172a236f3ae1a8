//go:build race

package engine_test

// raceDetector reports a test binary built with -race, whose timings are
// not the engine's.
const raceDetector = true
