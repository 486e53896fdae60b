package acceptance

import (
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

func TestMain(m *testing.M) { farmtest.Main(m) }
