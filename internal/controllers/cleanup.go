package controllers

import "strings"

// defaultCleanup returns the cleanup for a bootstrap config kind.
func defaultCleanup(bootstrapKind string) []string {
	switch {
	case strings.HasPrefix(bootstrapKind, "K0s"):
		return []string{"k0s stop || true", "k0s reset"}
	case bootstrapKind == "KubeadmConfig":
		return []string{"kubeadm reset -f"}
	}
	return []string{"if command -v kubeadm >/dev/null; then kubeadm reset -f; fi", "if command -v k0s >/dev/null; then k0s stop || true; k0s reset; fi"}
}
