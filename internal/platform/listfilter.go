package platform

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// listFilters are ListBuildsRequest's fields of the Filterable fields, by
// name (a test checks that each exists and is a string).
var listFilters = func() map[string]protoreflect.FieldDescriptor {
	fields := (&kilnv1.ListBuildsRequest{}).ProtoReflect().Descriptor().Fields()
	m := map[string]protoreflect.FieldDescriptor{}
	for _, name := range FilterFields {
		if fd := fields.ByName(protoreflect.Name(name)); fd != nil && fd.Kind() == protoreflect.StringKind {
			m[name] = fd
		}
	}
	return m
}()

// ListFilter returns the value req filters f by, as given ("" for any), or
// "" when f is not Filterable. req may be nil.
func (f Field) ListFilter(req *kilnv1.ListBuildsRequest) string {
	fd, ok := listFilters[f.Name]
	if !ok || req == nil {
		return ""
	}
	return req.ProtoReflect().Get(fd).String()
}

// SetListFilter makes req filter f by v; it does nothing when f is not
// Filterable. req must not be nil.
func (f Field) SetListFilter(req *kilnv1.ListBuildsRequest, v string) {
	if fd, ok := listFilters[f.Name]; ok {
		req.ProtoReflect().Set(fd, protoreflect.ValueOfString(v))
	}
}
