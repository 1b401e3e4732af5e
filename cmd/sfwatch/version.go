package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set with -ldflags "-X main.version=v1.2.3" by make build; go
// install takes it from the module version instead.
var version = ""

func versionString() string {
	return fmt.Sprintf("sfwatch %s %s/%s %s", versionNumber(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// versionNumber is the version alone (v1.2.3, devel-0123456789ab), for
// sfwatch_build_info's version label.
func versionNumber() string {
	v := version
	if info, ok := debug.ReadBuildInfo(); ok && v == "" {
		v = info.Main.Version
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 && (v == "" || v == "(devel)") {
				v = "devel-" + s.Value[:12]
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return v
}
