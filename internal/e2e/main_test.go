// Package e2e runs Kiln's four programs as real processes on loopback:
// a metaserver with its bbolt file and blob directory, buildservers building
// real git repositories under bubblewrap, startcompile and webstatus.
package e2e

import (
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

func TestMain(m *testing.M) { farmtest.Main(m) }
