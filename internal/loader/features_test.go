package loader

import (
	"testing"

	"github.com/sfwatch/sfwatch/internal/testenv"
)

// On a kernel that runs the other tests, every probe must find its
// feature: a probe that fails here would refuse runs that work.
func TestFeaturesPresent(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, f := range Features() {
		if f.Err != nil {
			t.Errorf("%s: %v", f.Name, f.Err)
		}
	}
	if err := CheckKernel(); err != nil {
		t.Error(err)
	}
}
