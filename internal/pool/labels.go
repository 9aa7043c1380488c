package pool

import (
	"strings"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// IsHardwareLabel says whether a label key is in infrav1.HardwareLabelDomain (or one of its subdomains), the
// domain Cluster API syncs from a Machine to its Node: such labels of a pool entry describe the host and travel
// with it.
func IsHardwareLabel(key string) bool {
	prefix, _, ok := strings.Cut(key, "/")
	if !ok {
		return false
	}
	return prefix == infrav1.HardwareLabelDomain || strings.HasSuffix(prefix, "."+infrav1.HardwareLabelDomain)
}

// HardwareLabels returns the labels of an entry that travel to the machines holding it (see IsHardwareLabel); nil
// when there are none.
func HardwareLabels(entry *infrav1.PooledRemoteMachine) map[string]string {
	var out map[string]string
	for k, v := range entry.Labels {
		if IsHardwareLabel(k) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
