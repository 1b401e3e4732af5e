package loader

import "testing"

func TestValidateRingBufSize(t *testing.T) {
	for _, size := range []int{0, 1000, 4097, 3 << 20, 2 * MaxRingBufSize, 1 << 32, 1 << 40} {
		if ValidateRingBufSize(size) == nil {
			t.Errorf("ValidateRingBufSize(%d) = nil, want an error", size)
		}
	}
	for _, size := range []int{4096, 1 << 20, DefaultRingBufSize, MaxRingBufSize} {
		if err := ValidateRingBufSize(size); err != nil {
			t.Errorf("ValidateRingBufSize(%d) = %v", size, err)
		}
	}
}

func TestAttachMode(t *testing.T) {
	for _, c := range []struct {
		arch, release string
		pmu, want     bool
	}{
		{"amd64", "6.18.44-fc-v782", true, false},
		{"amd64", "7.1.9", true, false},
		{"amd64", "7.2.13+deb14-cloud-amd64", true, true},
		{"amd64", "7.3.4+deb13-cloud-amd64", false, false}, // no kprobes
		{"arm64", "7.3.4", true, false},                    // x86-64 registers only
		{"amd64", "8.0.1", true, true},
		{"amd64", "garbage", true, false},
	} {
		if got := attachMode(c.arch, c.release, c.pmu); got.Kprobes != c.want || got.Why == "" {
			t.Errorf("attachMode(%s, %s, %v) = %+v, want kprobes %v", c.arch, c.release, c.pmu, got, c.want)
		}
	}
}
