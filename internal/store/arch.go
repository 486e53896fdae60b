package store

import kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"

// BuildArch is the architecture BuildFilter.Arch matches for b: the arch of
// the platform the build ran on once it has been dispatched
// (b.Build.Platform), otherwise the arch the requester pinned
// (b.Build.Constraints.Arch, possibly empty). Every Store implementation
// filters and indexes by this value so that they agree.
func BuildArch(b *Build) string {
	v := b.GetBuild()
	if v.GetPlatform() != nil {
		return v.GetPlatform().GetArch()
	}
	return v.GetConstraints().GetArch()
}

// BuildPlatformValue is the value a BuildFilter platform field matches for
// b, like BuildArch: field of the platform the build ran on once it has
// been dispatched, otherwise the value the requester pinned (possibly
// empty). field is "os", "arch", "endian", "data_model" or "libc"; any
// other gives "".
func BuildPlatformValue(b *Build, field string) string {
	v := b.GetBuild()
	if p := v.GetPlatform(); p != nil {
		switch field {
		case "os":
			return p.GetOs()
		case "arch":
			return p.GetArch()
		case "endian":
			return p.GetEndian()
		case "data_model":
			return p.GetDataModel()
		case "libc":
			return p.GetLibc()
		}
		return ""
	}
	c := v.GetConstraints()
	switch field {
	case "os":
		return c.GetOs()
	case "arch":
		return c.GetArch()
	case "endian":
		return c.GetEndian()
	case "data_model":
		return c.GetDataModel()
	case "libc":
		return c.GetLibc()
	}
	return ""
}

// Matches reports whether b is selected by f. Store implementations may
// narrow their scan with an index, but must agree with Matches.
func (f BuildFilter) Matches(b *Build) bool {
	v := b.GetBuild()
	return (f.State == kilnv1.BuildState_BUILD_STATE_UNSPECIFIED || v.GetState() == f.State) &&
		(f.Project == "" || v.GetProject() == f.Project) &&
		(f.Arch == "" || BuildArch(b) == f.Arch) &&
		(f.Os == "" || BuildPlatformValue(b, "os") == f.Os) &&
		(f.Endian == "" || BuildPlatformValue(b, "endian") == f.Endian) &&
		(f.DataModel == "" || BuildPlatformValue(b, "data_model") == f.DataModel) &&
		(f.Libc == "" || BuildPlatformValue(b, "libc") == f.Libc)
}
