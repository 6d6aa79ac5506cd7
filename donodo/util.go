package donodo

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// tagRE is the Docker tag grammar.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// validTag reports whether t is a valid image tag.
func validTag(t string) bool { return tagRE.MatchString(t) }

// jsonUnmarshal decodes archive JSON; malformed JSON is ErrCorruptArchive.
func jsonUnmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("parsing JSON: %v: %w", err, ErrCorruptArchive)
	}
	return nil
}
