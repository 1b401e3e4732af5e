package report

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteWholeKeepsLinks: a report written over a symbolic link
// replaces the file it points to, not the link; a rename leaves no
// temporary file behind.
func TestWriteWholeKeepsLinks(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target.json")
	if err := os.WriteFile(target, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := writeWhole(link, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v %v", fi, err)
	}
	fi, err := os.Stat(target)
	if data, _ := os.ReadFile(target); string(data) != "new" || err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("target: %q, %v %v; want \"new\", mode 0600", data, fi, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("left %v", entries)
	}
}
