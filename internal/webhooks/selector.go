package webhooks

import (
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Limits of a pool selector: a claim matches it against every entry of a pool, so its size is bounded whatever a
// client sends.
const (
	maxSelectorRequirements = 16
	maxSelectorValues       = 32
	maxSelectorBytes        = 4096
)

// validateSelectorSize refuses a selector with more requirements (matchLabels and matchExpressions together) or
// values per expression than a pool needs, or larger than maxSelectorBytes written as JSON.
func validateSelectorSize(path *field.Path, s *metav1.LabelSelector) field.ErrorList {
	if s == nil {
		return nil
	}
	if n := len(s.MatchLabels) + len(s.MatchExpressions); n > maxSelectorRequirements {
		return field.ErrorList{field.TooMany(path, n, maxSelectorRequirements)}
	}
	for i, e := range s.MatchExpressions {
		if len(e.Values) > maxSelectorValues {
			return field.ErrorList{field.TooMany(path.Child("matchExpressions").Index(i).Child("values"), len(e.Values), maxSelectorValues)}
		}
	}
	raw, err := json.Marshal(s)
	if err != nil {
		return field.ErrorList{field.Invalid(path, "", err.Error())}
	}
	if len(raw) > maxSelectorBytes {
		return field.ErrorList{field.Invalid(path, fmt.Sprintf("(%d bytes)", len(raw)), fmt.Sprintf(
			"must be at most %d bytes written as JSON: select pool entries by a few short labels", maxSelectorBytes))}
	}
	return nil
}
