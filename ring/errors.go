package ring

import "errors"

var (
	// ErrInvalidConfig is wrapped by every error Config.Validate returns; the
	// wrapping message names the field and the value.
	ErrInvalidConfig = errors.New("ring: invalid config")

	// ErrJoinFailed is wrapped by the error New returns when none of
	// Config.Join answered within Config.JoinTimeout (unreachable, or a
	// different gossip key). Nothing of the node is left running.
	ErrJoinFailed = errors.New("ring: could not join the cluster")
)
