package report

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// writeWhole writes data to path as a whole: into a new file next to it,
// renamed over it, so that a failed write (a full disk) leaves no half
// file. A device or a pipe (/dev/stdout) is written as it is, and so is a
// file in a directory that takes no new file.
func writeWhole(path string, data []byte) error {
	target := path
	if t, err := filepath.EvalSymlinks(path); err == nil {
		target = t // replace the file, not the link to it
	}
	fi, statErr := os.Stat(target)
	if statErr == nil && !fi.Mode().IsRegular() {
		return os.WriteFile(target, data, 0o644)
	}
	tmp := fmt.Sprintf("%s.sfwatch-%d.tmp", target, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return os.WriteFile(target, data, 0o644)
	}
	_, err = f.Write(data)
	if err == nil && statErr == nil {
		err = f.Chmod(fi.Mode().Perm()) // as os.WriteFile would leave it
	}
	err = errors.Join(err, f.Close())
	if err == nil {
		err = os.Rename(tmp, target)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
