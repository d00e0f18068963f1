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
    chromium(page, &["--dump-dom"])
}

/// Chromium's stdout after loading `page` with `args` on top of the
/// headless defaults.
fn chromium(page: &Path, args: &[&str]) -> String {
    let profile = std::env::temp_dir().join(format!(
        "teardown-chromium-{}-{}",
        std::process::id(),
        args.join("").len()
    ));
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
        ])
        .args(args)
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
    let page = tempfile::Builder::new()
        .prefix("teardown-render-")
        .suffix(".html")
        .tempfile()
        .unwrap()
        .into_temp_path();
    let o = Command::new(env!("CARGO_BIN_EXE_teardown"))
        .arg("render")
        .args(&reports)
        .arg("-o")
        .arg(&page)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dom = chromium_dom(&page);
    screenshots(&page);

    // The overview: a row per case, a column per host.
    for r in &loaded {
        let header = format!("<th title=\"{}\">", r.host.name());
        assert!(dom.contains(&header), "overview header {header}");
    }
    assert!(dom.matches("href=\"#h0-").count() >= loaded[0].cases.len());
    // A ladder per case and distinct shape: hosts that drew the same one
    // share it, and each host still has its anchor there.
    let runs: usize = loaded.iter().map(|r| r.cases.len()).sum();
    let ids: std::collections::BTreeSet<&str> = loaded
        .iter()
        .flat_map(|r| r.cases.iter().map(|c| c.id.as_str()))
        .collect();
    let svgs = dom.matches("<svg").count();
    assert!(
        svgs >= ids.len() && svgs < runs,
        "{svgs} ladders for {} cases",
        ids.len()
    );
    assert!(dom.matches("class=\"segment\"").count() > svgs * 5);
    for (j, r) in loaded.iter().enumerate() {
        for c in &r.cases {
            let anchor: String =
                c.id.chars()
                    .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
                    .collect();
            assert!(
                dom.contains(&format!("id=\"h{j}-{anchor}\"")),
                "h{j}-{anchor}"
            );
        }
    }
    // Time to scale: long idle gaps are cut and say how long they were;
    // calls that last are spans; the legend is there.
    assert!(dom.contains("class=\"cut\""));
    assert!(dom.contains("class=\"span\""));
    assert!(dom.contains("id=\"legend\""));
    // Where the kernels differ, the overview says so.
    assert!(dom.contains("class=\"mark\""));
    // The failures-and-differences view is a checkbox, not a script.
    assert!(dom.contains("id=\"only-problems\"") && !dom.contains("<script"));
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
    // A claim named in a plain list (`claims = ["C13"]`) reaches the
    // table too, with its expectation's why.
    let c13 = row("C13");
    assert!(
        c13.contains("seen as expected") && c13.contains("fin-wait-2-orphan-timeout"),
        "{c13}"
    );
    assert!(c13.contains("class=\"why\""), "{c13}");
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

/// Screenshots of the page at 1024 and 1400 px, for a person to look at:
/// target/screenshots/teardown-<width>.png (or $TEARDOWN_SCREENSHOTS).
fn screenshots(page: &Path) {
    let dir = std::env::var_os("TEARDOWN_SCREENSHOTS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    for width in [1024, 1400] {
        let png = dir.join(format!("teardown-{width}.png"));
        let _ = std::fs::remove_file(&png);
        chromium(
            page,
            &[
                "--hide-scrollbars",
                &format!("--window-size={width},3000"),
                &format!("--screenshot={}", png.display()),
            ],
        );
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert_eq!(&bytes[1..4], b"PNG", "{}", png.display());
        // The PNG header's width: the page was laid out at that width.
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        assert_eq!(w, width, "{}", png.display());
    }
}
