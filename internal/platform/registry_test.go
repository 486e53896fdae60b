package platform

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// The orders users and cache keys see; a change here is a change of
// behaviour (messages, flags) or of every cache key.
func TestRegistry_Orders_AreStable(t *testing.T) {
	for _, tt := range []struct {
		name      string
		got, want []string
	}{
		{"Fields", Fields, []string{"os", "arch", "endian", "data_model", "libc", "libc_version", "compiler", "compiler_version", "char_bit",
			"char_signed", "align_long_long", "align_double", "align_pointer", "sizeof_long_double", "sizeof_size_t", "sizeof_wchar_t", "page_size"}},
		{"IdentityFields", IdentityFields, []string{"os", "arch", "endian", "data_model", "char_bit", "libc", "libc_version", "compiler", "compiler_version",
			"char_signed", "align_long_long", "align_double", "align_pointer", "sizeof_long_double", "sizeof_wchar_t"}},
		{"FilterFields", FilterFields, []string{"os", "arch", "endian", "data_model", "libc"}},
		{"DefaultPinnedFields", DefaultPinnedFields, []string{"os", "arch", "endian", "data_model", "libc"}},
	} {
		if !slices.Equal(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestRegistry_Fields_AreWholeAndMatchTheirProtoFields(t *testing.T) {
	constraints := (&kilnv1.PlatformConstraints{}).ProtoReflect().Descriptor().Fields()
	info := (&kilnv1.SystemInfo{}).ProtoReflect().Descriptor().Fields()
	list := (&kilnv1.ListBuildsRequest{}).ProtoReflect().Descriptor().Fields()
	orders := map[int]string{}
	for _, f := range Registry {
		t.Run(f.Name, func(t *testing.T) {
			name := protoreflect.Name(f.Name)
			if constraints.ByName(name) == nil || info.ByName(name) == nil {
				t.Errorf("no field %s in PlatformConstraints or SystemInfo", f.Name)
			}
			if fd := list.ByName(name); f.Filterable && (fd == nil || fd.Kind() != protoreflect.StringKind) {
				t.Errorf("filterable, but ListBuildsRequest has no string field %s", f.Name)
			}
			if f.Flag != "" && f.Flag != FlagName(f.Name) && !(f.Name == "char_signed" && f.Flag == "char") {
				t.Errorf("Flag %q, want %q (FlagName)", f.Flag, FlagName(f.Name))
			}
			if f.Constraint == nil || f.Measured == nil || f.set == nil || f.canonical == nil {
				t.Fatal("a getter, the setter or the canonicalizer is missing")
			}
			if f.IdentityOrder != 0 {
				if other, dup := orders[f.IdentityOrder]; dup {
					t.Errorf("IdentityOrder %d taken by %s", f.IdentityOrder, other)
				}
				orders[f.IdentityOrder] = f.Name
			}
			// The setter writes the field the getter reads, and no other.
			v := f.Measured(s390x())
			c := &kilnv1.PlatformConstraints{}
			f.set(c, v)
			for _, g := range Registry {
				want := ""
				if g.Name == f.Name {
					want = v
				}
				if got := g.Constraint(c); got != want {
					t.Errorf("after setting %s to %q, %s = %q, want %q", f.Name, v, g.Name, got, want)
				}
			}
			if f.Constraint(nil) != "" || f.Measured(nil) != "" {
				t.Error("a getter of nil is not empty")
			}
		})
	}
	if len(orders) != len(IdentityFields) {
		t.Errorf("%d identity orders, %d IdentityFields", len(orders), len(IdentityFields))
	}
}

func TestLookup_UnknownName_IsNotFound(t *testing.T) {
	if _, ok := Lookup("kernel"); ok {
		t.Error("Lookup(kernel) found a field")
	}
	if f, ok := Lookup("data_model"); !ok || f.Flag != "data-model" || !f.CPU {
		t.Errorf("Lookup(data_model) = %+v, %v", f, ok)
	}
}

func TestField_ListFilter_ReadsAndWritesTheRequestFieldOfItsName(t *testing.T) {
	for _, f := range Registry {
		req := &kilnv1.ListBuildsRequest{}
		f.SetListFilter(req, "v-"+f.Name)
		got := f.ListFilter(req)
		if !f.Filterable {
			if got != "" || req.String() != "" {
				t.Errorf("%s is not filterable, yet the request became %v", f.Name, req)
			}
			continue
		}
		field := req.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(f.Name))
		if got != "v-"+f.Name || req.ProtoReflect().Get(field).String() != got {
			t.Errorf("%s: ListFilter = %q after SetListFilter, request %v", f.Name, got, req)
		}
	}
	if got := Registry[0].ListFilter(nil); got != "" {
		t.Errorf("ListFilter(nil) = %q", got)
	}
}
