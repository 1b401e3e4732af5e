package daemon

import (
	"strings"
)

// kubeLabels finds the pod uid and container id in a group path of the
// kubelet's layouts:
//
//	systemd driver:  .../kubepods-burstable-pod<uid, _ for ->.slice/cri-containerd-<id>.scope
//	                 (also docker-<id>.scope, crio-<id>.scope)
//	cgroupfs driver: /kubepods/burstable/pod<uid>/<id>
//
// Either is "" where the path says nothing (a pod's own group has no
// container id; crio's conmon scope is not a container).
func kubeLabels(path string) (podUID, containerID string) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, part := range parts {
		uid, ok := podComponent(part)
		if !ok {
			continue
		}
		podUID = uid
		if i+1 < len(parts) {
			containerID = containerComponent(parts[i+1])
		}
	}
	return podUID, containerID
}

// podComponent reads "pod<uid>" (cgroupfs) or "kubepods[-class]-pod<uid
// with _>.slice" (systemd).
func podComponent(part string) (string, bool) {
	if s, ok := strings.CutSuffix(part, ".slice"); ok {
		if !strings.HasPrefix(s, "kubepods-") {
			return "", false
		}
		i := strings.LastIndex(s, "-pod")
		if i < 0 {
			return "", false
		}
		part = s[i+1:]
	}
	uid, ok := strings.CutPrefix(part, "pod")
	uid = strings.ReplaceAll(uid, "_", "-")
	if !ok || !isUID(uid) {
		return "", false
	}
	return uid, true
}

// containerComponent reads "cri-containerd-<id>.scope", "docker-<id>.scope",
// "crio-<id>.scope" (systemd) or "<id>" (cgroupfs).
func containerComponent(part string) string {
	if s, ok := strings.CutSuffix(part, ".scope"); ok {
		part = ""
		for _, prefix := range []string{"cri-containerd-", "docker-", "crio-"} {
			if id, ok := strings.CutPrefix(s, prefix); ok {
				part = id
				break
			}
		}
	}
	if !isHexID(part) {
		return ""
	}
	return part
}

// isUID: 8-4-4-4-12 hex digits.
func isUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
		} else if !isHex(c) {
			return false
		}
	}
	return true
}

// isHexID: a container runtime's id, 64 hex digits (shorter ones, from 12,
// are accepted: some tools cut them).
func isHexID(s string) bool {
	if len(s) < 12 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !isHex(c) {
			return false
		}
	}
	return true
}

func isHex(c rune) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
}
