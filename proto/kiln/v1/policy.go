package kilnv1

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
)

// Refusal returns why policy p refuses a build of project with options and
// a wall-time limit of timeoutSeconds (0: none set), or "" when p allows it:
// a project not in its allowed list, an option value not among its allowed
// values, or a time limit longer than its maximum build time. A nil policy
// allows everything. Idle-only is not decided here: a busy build server
// reports itself busy and takes no work at all.
//
// This is the one statement of a volunteer's policy: the scheduler applies
// it before dispatch and the build server again before it runs anything.
func (p *BuildServerPolicy) Refusal(project string, options map[string]string, timeoutSeconds uint32) string {
	if p == nil {
		return ""
	}
	if len(p.GetAllowedProjects()) > 0 && !slices.Contains(p.GetAllowedProjects(), project) {
		return "project " + strconv.Quote(project) + " is not allowed"
	}
	names := make([]string, 0, len(p.GetAllowedOptions()))
	for name := range p.GetAllowedOptions() {
		names = append(names, name)
	}
	sort.Strings(names) // the same option is named first every time
	for _, name := range names {
		allowed := p.GetAllowedOptions()[name].GetValues()
		if v, set := options[name]; set && !slices.Contains(allowed, v) {
			return fmt.Sprintf("option %s=%q is not allowed (allowed: %q)", name, v, allowed)
		}
	}
	if limit := p.GetMaxBuildSeconds(); limit > 0 && timeoutSeconds > limit {
		return fmt.Sprintf("time limit %ds exceeds the maximum of %ds", timeoutSeconds, limit)
	}
	return ""
}

// MissingTool returns the first of requires that the measured system s
// does not have, or "" when it has them all.
func (s *SystemInfo) MissingTool(requires []string) string {
	for _, tool := range requires {
		if _, ok := s.GetTools()[tool]; !ok {
			return tool
		}
	}
	return ""
}
