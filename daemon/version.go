//go:build linux

package daemon

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is handoff's version; release builds set it with
// -ldflags "-X github.com/handoff-dev/handoff/daemon.Version=v1.2.3".
var Version = ""

// version names this build: Version when the release build set it, else the
// module version from the build info ("v1.2.0" from go install …@v1.2.0, a
// pseudo-version with the revision from a checkout), else the VCS revision
// and whether the tree was modified; then the Go release and platform.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return fmt.Sprintf("%s (%s %s/%s; no build information)", orDevel(Version), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	return describeBuild(Version, bi)
}

// describeBuild is version for given build information.
func describeBuild(release string, bi *debug.BuildInfo) string {
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	v := release
	if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	var extra []string
	if rev := settings["vcs.revision"]; rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if v == "" || !strings.Contains(v, rev) {
			extra = append(extra, "revision "+rev)
		}
		if settings["vcs.modified"] == "true" && !strings.HasSuffix(v, "+dirty") {
			extra = append(extra, "modified")
		}
		if t := settings["vcs.time"]; t != "" {
			extra = append(extra, "committed "+t)
		}
	} else if v == "" {
		extra = append(extra, "no version or VCS information in this build")
	}
	goVersion := bi.GoVersion
	if goVersion == "" {
		goVersion = runtime.Version()
	}
	extra = append(extra, goVersion, runtime.GOOS+"/"+runtime.GOARCH)
	return orDevel(v) + " (" + strings.Join(extra, ", ") + ")"
}

func orDevel(v string) string {
	if v == "" {
		return "devel"
	}
	return v
}
