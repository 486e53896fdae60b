package web

import (
	"encoding/json"
	"net/url"
	"testing"
)

func TestBuildFilter_MarshalJSON_IsOneFlatObjectInQueryOrder(t *testing.T) {
	for _, tt := range []struct {
		name, query, want string
	}{
		{"nothing given", "",
			`{"state":"","project":"","os":"","arch":"","endian":"","data_model":"","libc":""}`},
		{"every parameter", "state=failed&project=libfoo&os=linux&arch=s390x&endian=big&data_model=LP64&libc=glibc&page_size=5&page_token=t",
			`{"state":"failed","project":"libfoo","os":"linux","arch":"s390x","endian":"big","data_model":"LP64","libc":"glibc","page_size":5,"page_token":"t"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			f, err := parseBuildFilter(q)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(f)
			if err != nil || string(got) != tt.want {
				t.Errorf("JSON = %s, %v\nwant   %s", got, err, tt.want)
			}
		})
	}
}
