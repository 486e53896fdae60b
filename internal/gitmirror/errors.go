package gitmirror

import "errors"

var (
	// ErrUnreachable means the mirror's URL could not be cloned or fetched
	// from: the host or repository does not exist, refused access, or the
	// network failed. A retry later may succeed. The wrapping error carries
	// git's own message.
	ErrUnreachable = errors.New("gitmirror: repository unreachable")

	// ErrUnknownRevision means a revision or commit does not name a commit of
	// the repository, even after fetching. The wrapping error names the
	// revision. It is the requester's mistake, not a transient failure.
	ErrUnknownRevision = errors.New("gitmirror: unknown revision")

	// ErrBadRevision means a revision is malformed or not acceptable: it
	// starts with '-', contains whitespace, control characters or "..", is a
	// malformed range, is not a full commit id where one is required, or a
	// range whose start is not a first-parent ancestor of its end. It is
	// returned before any git process runs when the text alone shows it.
	ErrBadRevision = errors.New("gitmirror: bad revision")

	// ErrUnsafePath means an exported tree holds an entry that would land
	// outside the destination directory: an absolute or ".." path, a symbolic
	// link whose target leaves the tree, an entry below a symbolic link, or an
	// entry type that a git tree cannot hold. Nothing is ever written outside
	// the destination, but the destination's content is unspecified after it.
	ErrUnsafePath = errors.New("gitmirror: unsafe path in tree")

	// ErrFileTooLarge means a file read with [Mirror.ReadFile] is larger than
	// [MaxFileSize].
	ErrFileTooLarge = errors.New("gitmirror: file too large")
)
