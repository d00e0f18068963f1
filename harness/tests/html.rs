//! `teardown render` in a real browser: headless Chromium loads the page
//! made from the committed kernel-matrix reports, and the test asserts on
//! the DOM it built. Needs Debian's `chromium` (`just test` installs it);
//! no root.

use std::path::{Path, PathBuf};
use std::process::Command;

fn kernel_reports() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports/kernels");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// The browser: $TEARDOWN_CHROMIUM, or the first of Debian's `chromium`,
/// Ubuntu's `chromium-browser` and `google-chrome` (GitHub's runners) on PATH.
fn browser() -> String {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    std::env::var("TEARDOWN_CHROMIUM")
        .ok()
        .or_else(|| {
            ["chromium", "chromium-browser", "google-chrome"]
                .into_iter()
                .find(|b| on_path(b))
                .map(String::from)
        })
        .expect("no Chromium: apt-get install chromium (just test does), or set TEARDOWN_CHROMIUM")
}

/// The DOM after Chromium loaded the page.
fn chromium_dom(page: &Path) -> String {
    let profile = std::env::temp_dir().join(format!("teardown-chromium-{}", std::process::id()));
    let out = Command::new(browser())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("start the browser");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn chromium_shows_overview_claims_and_ladders() {
    let reports = kernel_reports();
    assert!(
        reports.len() >= 3,
        "several kernels and the host: {reports:?}"
    );
    let loaded: Vec<teardown::report::Report> = reports
        .iter()
        .map(|p| teardown::report::load::read(p).unwrap())
        .collect();
    let page = std::env::temp_dir().join(format!("teardown-render-{}.html", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_teardown"))
        .arg("render")
        .args(&reports)
        .arg("-o")
        .arg(&page)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dom = chromium_dom(&page);
    let _ = std::fs::remove_file(&page);

    // The overview: a row per case, a column per host.
    for r in &loaded {
        let header = format!("<th>{}</th>", r.host.name());
        assert!(dom.contains(&header), "overview header {header}");
    }
    assert!(dom.matches("href=\"#h0-").count() >= loaded[0].cases.len());
    // A ladder per case and host, each with its lifelines and arrows.
    let ladders: usize = loaded.iter().map(|r| r.cases.len()).sum();
    assert_eq!(dom.matches("<svg").count(), ladders);
    assert!(dom.matches("class=\"segment\"").count() > ladders * 5);
    // Claims: every one listed; C8 and C9 do not hold on any of the
    // kernels, each with links to its evidence.
    for i in 1..=13 {
        assert!(dom.contains(&format!("id=\"claim-C{i}\"")), "claim C{i}");
    }
    let row = |id: &str| -> String {
        let start = dom.find(&format!("id=\"claim-{id}\"")).unwrap();
        let end = dom[start..].find("</tr>").unwrap();
        dom[start..start + end].to_string()
    };
    for id in ["C8", "C9"] {
        let r = row(id);
        assert_eq!(
            r.matches("class=\"does-not-hold\"").count(),
            loaded.len(),
            "{r}"
        );
        assert!(r.contains("href=\"#h2-linger-timeout"), "{r}");
    }
    assert!(row("C13").contains("not tested"));
    // Every link to a case points at a section that exists.
    for (i, _) in dom.match_indices("href=\"#h") {
        let target = &dom[i + 7..];
        let target = &target[..target.find('"').unwrap()];
        assert!(
            dom.contains(&format!("id=\"{target}\"")),
            "dangling link #{target}"
        );
    }
}
