package recon_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// module is this repository's module path.
const module = "github.com/recon-mri/recon"

// architectureDoc holds the import rules TestImportRules enforces.
const architectureDoc = "docs/ARCHITECTURE.md"

// mustNever is the floor of the "Never imports" table: the rules the
// architecture is built on. The table may forbid more; a row that lacks
// one of these fails the test, so the rules cannot be dropped by editing
// the document alone.
var mustNever = map[string][]string{
	"internal/jobs":     {"net", "internal/secure", "internal/listen", "internal/protocol", "client"},
	"internal/runner":   {"net", "internal/secure", "internal/listen", "internal/protocol", "client"},
	"internal/server":   {"internal/relay"},
	"internal/relay":    {"internal/server"},
	"client":            {"internal/server", "internal/jobs", "internal/runner"},
	"internal/protocol": {"internal/jobs", "internal/runner"},
}

// goPackage is what `go list -json` says of one package.
type goPackage struct {
	ImportPath string
	Imports    []string
	Deps       []string
	Error      *struct{ Err string }
}

// TestImportRules checks docs/ARCHITECTURE.md against the code: every
// package of the module has a row in its "Imports" table listing exactly
// the recon packages its non-test files import, and no package imports,
// directly or through another recon package, what its row of the "Never
// imports" table forbids.
func TestImportRules(t *testing.T) {
	doc, err := os.ReadFile(architectureDoc)
	if err != nil {
		t.Fatal(err)
	}
	listed, err := docTable(doc, "packages", false)
	if err != nil {
		t.Fatal(err)
	}
	allowed, err := docTable(doc, "imports", true)
	if err != nil {
		t.Fatal(err)
	}
	never, err := docTable(doc, "never", true)
	if err != nil {
		t.Fatal(err)
	}
	pkgs := listPackages(t)

	// The "Packages" table: one row per package of the module.
	for name := range pkgs {
		if _, ok := listed[name]; !ok {
			t.Errorf("%s: package %s has no row in the Packages table, which says what each package is for", architectureDoc, name)
		}
	}
	for name := range listed {
		if _, ok := pkgs[name]; !ok {
			t.Errorf("%s: the Packages table has a row for %s, which is not a package of the module", architectureDoc, name)
		}
	}

	for _, p := range pkgs {
		if p.Error != nil {
			t.Errorf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
	}

	// The "Imports" table: exactly the real imports, one row per package.
	for name, p := range pkgs {
		got := reconImports(p)
		want, ok := allowed[name]
		if !ok {
			t.Errorf("%s: package %s has no row in the Imports table; if the rules allow its imports, add\n%s", architectureDoc, name, row(name, got))
			continue
		}
		bad := false
		for _, imp := range got {
			if !slices.Contains(want, imp) {
				t.Errorf("%s imports %s, which its row in %s does not list", name, imp, architectureDoc)
				bad = true
			}
		}
		for _, imp := range want {
			if !slices.Contains(got, imp) {
				t.Errorf("%s: the row of %s lists %s, which it does not import", architectureDoc, name, imp)
				bad = true
			}
		}
		if bad {
			t.Logf("the row of %s as the code is; if the rules allow it:\n%s", name, row(name, got))
		}
	}
	for name := range allowed {
		if _, ok := pkgs[name]; !ok {
			t.Errorf("%s: the Imports table has a row for %s, which is not a package of the module", architectureDoc, name)
		}
	}

	// The floor of the "Never imports" table.
	for name, floor := range mustNever {
		for _, f := range floor {
			if !slices.Contains(never[name], f) {
				t.Errorf("%s: the Never imports row of %s must forbid %s", architectureDoc, name, f)
			}
		}
	}

	// The "Never imports" table, through every package in between.
	for name, forbidden := range never {
		p, ok := pkgs[name]
		if !ok {
			t.Errorf("%s: the Never imports table has a row for %s, which is not a package of the module", architectureDoc, name)
			continue
		}
		// p and every recon package it depends on.
		path := []*goPackage{p}
		for _, d := range p.Deps {
			if q, ok := pkgs[shortName(d)]; ok && isRecon(d) {
				path = append(path, q)
			}
		}
		for _, f := range forbidden {
			_, isPkg := pkgs[f]
			if !isPkg && (f == "client" || strings.HasPrefix(f, "internal/") || strings.HasPrefix(f, "cmd/")) {
				t.Errorf("%s: the Never imports row of %s names %s, which is not a package of the module", architectureDoc, name, f)
				continue
			}
			if isPkg {
				if slices.Contains(p.Deps, fullName(f)) {
					t.Errorf("%s depends on %s (%s forbids it): %s", name, f, architectureDoc, chain(pkgs, p, fullName(f)))
				}
				continue
			}
			for _, q := range path {
				if slices.Contains(q.Imports, f) {
					t.Errorf("%s imports %s, and %s does not allow it in %s or any recon package it uses", shortName(q.ImportPath), f, architectureDoc, name)
				}
			}
		}
	}
}

// listPackages runs `go list -json ./...` in the module root and returns
// the packages by their name in ARCHITECTURE.md.
func listPackages(t *testing.T) map[string]*goPackage {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the imports: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "list", "-e", "-json=ImportPath,Imports,Deps,Error", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	pkgs := make(map[string]*goPackage)
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(goPackage)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs[shortName(p.ImportPath)] = p
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

// docTable reads the table between <!-- name:start --> and
// <!-- name:end --> in doc: for each row, the first code span is the
// package and, if lists, the code spans of the second column are what the
// row lists ("—" for nothing). Other columns are not read.
func docTable(doc []byte, name string, lists bool) (map[string][]string, error) {
	start, end := "<!-- "+name+":start -->", "<!-- "+name+":end -->"
	i, j := bytes.Index(doc, []byte(start)), bytes.Index(doc, []byte(end))
	if i < 0 || j < i {
		return nil, fmt.Errorf("%s: no %s ... %s", architectureDoc, start, end)
	}
	rows := make(map[string][]string)
	code := regexp.MustCompile("`([^`]+)`")
	sc := bufio.NewScanner(bytes.NewReader(doc[i+len(start) : j]))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "| `") {
			continue // the header, the rule under it, blank lines
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 2 {
			return nil, fmt.Errorf("%s: table %s: row %q has no second column", architectureDoc, name, line)
		}
		pkg := code.FindStringSubmatch(cells[0])
		if pkg == nil {
			return nil, fmt.Errorf("%s: table %s: row %q names no package", architectureDoc, name, line)
		}
		if _, dup := rows[pkg[1]]; dup {
			return nil, fmt.Errorf("%s: table %s: two rows for %s", architectureDoc, name, pkg[1])
		}
		entries := []string{}
		if !lists {
			rows[pkg[1]] = entries
			continue
		}
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			entries = append(entries, m[1])
		}
		if len(entries) == 0 && strings.TrimSpace(cells[1]) != "—" {
			return nil, fmt.Errorf("%s: table %s: row of %s lists neither packages nor —", architectureDoc, name, pkg[1])
		}
		rows[pkg[1]] = entries
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: table %s has no rows", architectureDoc, name)
	}
	return rows, nil
}

// reconImports is what p's non-test files import of the module, by name.
func reconImports(p *goPackage) []string {
	var out []string
	for _, imp := range p.Imports {
		if isRecon(imp) {
			out = append(out, shortName(imp))
		}
	}
	return out
}

// chain names a path of imports from p to dep (full import path) through
// recon packages, so a failure says where the forbidden import comes in.
func chain(pkgs map[string]*goPackage, p *goPackage, dep string) string {
	// Breadth first over recon packages; dep may be reached directly.
	prev := map[string]string{p.ImportPath: ""}
	queue := []string{p.ImportPath}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		q := pkgs[shortName(cur)]
		if q == nil {
			continue
		}
		for _, imp := range q.Imports {
			if _, seen := prev[imp]; seen || !isRecon(imp) {
				continue
			}
			prev[imp] = cur
			if imp == dep {
				var steps []string
				for at := imp; at != ""; at = prev[at] {
					steps = append([]string{shortName(at)}, steps...)
				}
				return strings.Join(steps, " → ")
			}
			queue = append(queue, imp)
		}
	}
	return "through a package outside recon"
}

// isRecon reports whether the import path is a package of this module.
func isRecon(path string) bool { return path == module || strings.HasPrefix(path, module+"/") }

// shortName is a package's name in ARCHITECTURE.md: its path in the
// module, "." for the root; other packages keep their import path.
func shortName(path string) string {
	if path == module {
		return "."
	}
	if rest, ok := strings.CutPrefix(path, module+"/"); ok {
		return rest
	}
	return path
}

// fullName is the import path of a package named as in ARCHITECTURE.md.
func fullName(name string) string {
	if name == "." {
		return module
	}
	return module + "/" + name
}

// row is the Imports table's row for package name importing imps.
func row(name string, imps []string) string {
	if len(imps) == 0 {
		return "| `" + name + "` | — |"
	}
	return "| `" + name + "` | `" + strings.Join(imps, "`, `") + "` |"
}
