package pgcluster

import "errors"

var (
	// ErrNoBinaries means no PostgreSQL installation with initdb and pg_ctl
	// was found (and none was installed, see Config.Install).
	ErrNoBinaries = errors.New("pgcluster: PostgreSQL binaries not found")

	// ErrRemoved is returned by Restart after Stop removed the temporary
	// directory the cluster lived in: there is nothing left to start.
	ErrRemoved = errors.New("pgcluster: cluster directory was removed by Stop")
)
