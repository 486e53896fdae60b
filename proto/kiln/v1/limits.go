package kilnv1

// The protocol's size limits, in one place for both ends of the wire: the
// metaserver enforces them and the build servers and requesters stay within
// them.
const (
	// MaxMessageBytes is the largest gRPC message the metaserver receives
	// (grpc.MaxRecvMsgSize, which its gRPC server must be given); a larger
	// one fails that call with RESOURCE_EXHAUSTED before any handler sees
	// it. It bounds what one message can make the metaserver buffer: upload
	// data comes in chunks of at most MaxUploadChunkBytes and log chunks of
	// at most MaxLogChunkBytes, so 4 MiB leaves room for every honest
	// message.
	MaxMessageBytes = 4 << 20
	// MaxLogChunkBytes bounds a build server's LogChunk.data; a larger chunk
	// ends the session with INVALID_ARGUMENT.
	MaxLogChunkBytes = 64 << 10
	// MaxUploadChunkBytes bounds the data of one UploadArtifact message a
	// build server sends.
	MaxUploadChunkBytes = 1 << 20
	// LogChunkOutBytes and DownloadChunkBytes bound what the metaserver
	// sends a requester in one log or download message.
	LogChunkOutBytes   = 256 << 10
	DownloadChunkBytes = 1 << 20
	// MaxClientRecvBytes is the largest message startcompile accepts from
	// the metaserver, well above every chunk it sends.
	MaxClientRecvBytes = 16 << 20
)
