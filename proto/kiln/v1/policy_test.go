package kilnv1

import "testing"

func TestBuildServerPolicyRefusal(t *testing.T) {
	p := &BuildServerPolicy{
		AllowedProjects: []string{"zlib", "hello"},
		AllowedOptions: map[string]*OptionValues{
			"opt": {Values: []string{"O2"}},
			"cc":  {Values: []string{"gcc"}},
		},
		MaxBuildSeconds: 600,
	}
	for _, tc := range []struct {
		name, project string
		options       map[string]string
		timeout       uint32
		want          string
	}{
		{"allowed", "hello", map[string]string{"opt": "O2", "other": "x"}, 600, ""},
		{"project", "secret", nil, 0, `project "secret" is not allowed`},
		{"first bad option by name", "zlib", map[string]string{"opt": "O3", "cc": "clang"}, 0,
			`option cc="clang" is not allowed (allowed: ["gcc"])`},
		{"time limit", "zlib", nil, 601, "time limit 601s exceeds the maximum of 600s"},
	} {
		if got := p.Refusal(tc.project, tc.options, tc.timeout); got != tc.want {
			t.Errorf("%s: Refusal = %q, want %q", tc.name, got, tc.want)
		}
	}
	var none *BuildServerPolicy
	if got := none.Refusal("anything", map[string]string{"opt": "x"}, 1<<30); got != "" {
		t.Errorf("nil policy refuses: %q", got)
	}
}

func TestSystemInfoMissingTool(t *testing.T) {
	s := &SystemInfo{Tools: map[string]string{"make": "4.3", "cmake": "3.25"}}
	if got := s.MissingTool([]string{"make", "meson", "ninja"}); got != "meson" {
		t.Errorf("MissingTool = %q, want meson", got)
	}
	if got := s.MissingTool([]string{"make"}); got != "" {
		t.Errorf("MissingTool = %q, want none", got)
	}
}
