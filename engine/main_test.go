package engine_test

import (
	"testing"

	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
)

func TestMain(m *testing.M) { pgclustertest.Main(m) }
