//! What the stream a sink writes to can show: colour, and how wide a line
//! may be. Decided once per command from `--color`, the environment
//! (`NO_COLOR`, `CLICOLOR_FORCE`, `TERM=dumb`, through anstream, the same
//! rules clap follows) and whether the stream is a terminal; sinks only
//! read it.

use comfy_table::{Cell, Color, ContentArrangement, Table, presets};

/// `--color`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour on a terminal, unless NO_COLOR is set (CLICOLOR_FORCE forces it).
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terminal {
    pub colour: bool,
    /// Columns a line may take; `None`: unbounded (a pipe or a file, where
    /// a wrapped row would only break a script that reads it).
    pub width: Option<u16>,
}

impl Terminal {
    /// No colour, no width limit: files, pipes, tests.
    pub const PLAIN: Terminal = Terminal {
        colour: false,
        width: None,
    };

    /// For stdout.
    pub fn stdout(choice: ColorChoice) -> Terminal {
        Terminal::of(&std::io::stdout(), choice)
    }

    /// For stderr (the table of `run --format json`).
    pub fn stderr(choice: ColorChoice) -> Terminal {
        Terminal::of(&std::io::stderr(), choice)
    }

    fn of<S: anstream::stream::RawStream>(stream: &S, choice: ColorChoice) -> Terminal {
        let colour = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                anstream::AutoStream::choice(stream) != anstream::ColorChoice::Never
            }
        };
        // COLUMNS wins (tmux, scripts, tests); else the terminal's own size.
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|w| *w > 0)
            .or_else(|| stream.is_terminal().then(crossterm_width).flatten());
        Terminal { colour, width }
    }

    /// A table in this terminal's style: no borders, two spaces between
    /// columns, rows wrapped within the width (columns that must stay whole,
    /// like a case id, say so with [`keep_whole`]).
    pub fn table(&self, header: &[&str]) -> Table {
        let mut t = Table::new();
        t.load_style(presets::NOTHING);
        t.set_header(header.iter().map(Cell::new));
        match self.width {
            Some(w) => {
                t.set_content_arrangement(ContentArrangement::Dynamic);
                t.set_width(w);
            }
            None => {
                t.set_content_arrangement(ContentArrangement::Disabled);
            }
        }
        if self.colour {
            t.enforce_styling();
        } else {
            t.force_no_tty();
        }
        for (i, c) in t.column_iter_mut().enumerate() {
            c.set_padding((0, if i + 1 == header.len() { 0 } else { 2 }));
        }
        t
    }

    /// `text` in `colour` when this terminal shows colour.
    pub(crate) fn paint(&self, text: &str, colour: Color) -> Cell {
        let cell = Cell::new(text);
        if self.colour { cell.fg(colour) } else { cell }
    }
}

/// Never wrap column `i` of `t`: an id must stay copyable, a number
/// readable.
pub(crate) fn keep_whole(t: &mut Table, i: usize) {
    if let Some(c) = t.column_mut(i) {
        c.set_constraint(comfy_table::ColumnConstraint::ContentWidth);
    }
}

/// Where every column of `t` is kept whole and the whole table is wider
/// than the terminal, hide columns in `order` (least needed first) until it
/// fits; the hidden columns' headers, for a note saying so.
pub(crate) fn fit_by_hiding(t: &mut Table, width: Option<u16>, order: &[usize]) -> Vec<String> {
    let Some(width) = width else {
        return Vec::new();
    };
    let headers: Vec<String> = t
        .header()
        .map(|h| h.cell_iter().map(|c| c.content()).collect())
        .unwrap_or_default();
    let natural: Vec<usize> = t
        .column_max_content_widths()
        .iter()
        .zip(t.column_iter())
        .map(|(w, c)| usize::from(*w) + usize::from(c.padding_width()))
        .collect();
    let mut total: usize = natural.iter().sum();
    let mut hidden = Vec::new();
    for &i in order {
        if total <= usize::from(width) {
            break;
        }
        if let Some(c) = t.column_mut(i) {
            c.set_constraint(comfy_table::ColumnConstraint::Hidden);
            total -= natural[i];
            hidden.extend(headers.get(i).cloned());
        }
    }
    hidden
}

/// The table as lines without trailing blanks.
pub fn lines(t: &Table) -> String {
    let mut out = String::new();
    for l in t.lines() {
        out.push_str(l.trim_end());
        out.push('\n');
    }
    out
}

/// The terminal's width as comfy-table (crossterm) sees it on stdout.
fn crossterm_width() -> Option<u16> {
    Table::new().width().filter(|w| *w > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_table_wraps_within_the_width_and_keeps_ids_whole() {
        let term = Terminal {
            colour: false,
            width: Some(45),
        };
        let mut t = term.table(&["id", "text"]);
        t.add_row(vec![
            "close-graceful/ipv4/linger=0",
            "a long explanation that must wrap",
        ]);
        keep_whole(&mut t, 0);
        let out = lines(&t);
        assert!(out.lines().all(|l| l.chars().count() <= 45), "{out}");
        assert!(out.contains("close-graceful/ipv4/linger=0"), "{out}");
        assert!(out.lines().count() > 2, "the text wraps: {out}");
        assert!(!out.contains('\u{1b}'));
    }

    #[test]
    fn colour_is_escape_codes_only_when_asked_for() {
        let on = Terminal {
            colour: true,
            width: None,
        };
        let mut t = on.table(&["v"]);
        t.add_row(vec![on.paint("pass", Color::Green)]);
        assert!(lines(&t).contains("\u{1b}["));
        let mut t = Terminal::PLAIN.table(&["v"]);
        t.add_row(vec![Terminal::PLAIN.paint("pass", Color::Green)]);
        assert_eq!(lines(&t), "v\npass\n");
    }
}
