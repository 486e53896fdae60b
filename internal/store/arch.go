package store

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
