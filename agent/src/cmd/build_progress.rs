//! `moor build --progress`: where a build's steps and their output go.
//!
//! - [`Plain`]: BuildKit's plain format, a line per event on stderr
//!   (`#N [stage k/n] INSTRUCTION`, `#N OUTPUT`, `#N DONE 0.4s`,
//!   `#N CACHED`, `#N ERROR: …`).
//! - [`Tty`]: each step with its time and, while it runs, the last lines of
//!   its output, redrawn in place; at the end the whole list of steps and
//!   times. A failing step's whole output is printed.
//! - quiet: nothing (the image ID alone goes to stdout).
//!
//! Whatever a `RUN` prints, control characters included, is shown with
//! its control characters replaced: a step cannot move the cursor, clear
//! the screen or retitle the terminal it is shown on.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use moor_runtime::build::{Progress, StepEnd};

/// Lines of a running step's output a terminal shows.
const TAIL: usize = 6;
/// Lines of a step's output kept for when it fails; earlier ones are
/// counted and dropped.
const KEPT: usize = 10_000;
/// The shortest time between two redraws caused by output.
const REDRAW: Duration = Duration::from_millis(100);

/// `line` with every control character but a tab replaced by `�`, and
/// tabs by a space.
pub fn sanitize(line: &str) -> String {
    line.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// The plain format on stderr.
#[derive(Debug, Default)]
pub struct Plain;

impl Progress for Plain {
    fn line(&self, line: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", sanitize(line));
    }
}

/// Nothing at all.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn line(&self, _: &str) {}
    fn start(&self, _: usize, _: &str) {}
    fn output(&self, _: usize, _: &str) {}
    fn end(&self, _: usize, _: &StepEnd, _: Duration) {}
}

#[derive(Debug)]
struct Step {
    title: String,
    started: Instant,
    end: Option<(StepEnd, Duration)>,
    tail: VecDeque<String>,
    all: VecDeque<String>,
    dropped: usize,
}

#[derive(Debug)]
struct Screen {
    started: Instant,
    steps: BTreeMap<usize, Step>,
    /// Lines drawn below the cursor's home, to erase before a redraw.
    drawn: usize,
    last_draw: Option<Instant>,
    finished: bool,
}

/// The terminal format, on stderr (a terminal).
#[derive(Debug)]
pub struct Tty {
    screen: Mutex<Screen>,
}

impl Default for Tty {
    fn default() -> Self {
        Self {
            screen: Mutex::new(Screen {
                started: Instant::now(),
                steps: BTreeMap::new(),
                drawn: 0,
                last_draw: None,
                finished: false,
            }),
        }
    }
}

/// The terminal's size (columns, rows) on stderr; 80×24 when unknown.
fn size() -> (usize, usize) {
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
    // points to one.
    let ok = unsafe { nix::libc::ioctl(2, nix::libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (usize::from(ws.ws_col), usize::from(ws.ws_row))
    } else {
        (80, 24)
    }
}

/// `s` cut to `width` characters.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn status(step: &Step, now: Instant) -> String {
    match &step.end {
        None => format!("{:.1}s", (now - step.started).as_secs_f64()),
        Some((StepEnd::Done, d)) => format!("DONE {:.1}s", d.as_secs_f64()),
        Some((StepEnd::Cached, _)) => "CACHED".into(),
        Some((StepEnd::Failed(_), d)) => format!("ERROR {:.1}s", d.as_secs_f64()),
    }
}

impl Screen {
    fn erase(&mut self, out: &mut impl Write) {
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\r\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    /// The lines of the live view: a header, the steps, the tails of the
    /// running ones; the oldest finished steps are left out to fit `rows`.
    fn view(&self, width: usize, rows: usize, now: Instant) -> Vec<String> {
        let done = self.steps.values().filter(|s| s.end.is_some()).count();
        let mut lines = vec![fit(
            &format!(
                "[+] Building {:.1}s ({done}/{})",
                (now - self.started).as_secs_f64(),
                self.steps.len()
            ),
            width,
        )];
        let mut body = Vec::new();
        for (id, s) in &self.steps {
            let st = status(s, now);
            let room = width.saturating_sub(st.len() + 1);
            let head = fit(&format!("#{id} {}", s.title), room);
            let pad = room.saturating_sub(head.chars().count());
            body.push((
                s.end.is_some(),
                vec![format!("{head}{} {st}", " ".repeat(pad))],
            ));
            if s.end.is_none() {
                let last = body.last_mut().expect("just pushed");
                for l in &s.tail {
                    last.1.push(fit(&format!("  > {l}"), width));
                }
            }
        }
        let total: usize = body.iter().map(|(_, l)| l.len()).sum();
        let budget = rows.saturating_sub(2).max(4);
        let mut over = total.saturating_sub(budget);
        let mut hidden = 0;
        for (finished, l) in &mut body {
            if over == 0 {
                break;
            }
            if *finished {
                over = over.saturating_sub(l.len());
                l.clear();
                hidden += 1;
            }
        }
        if hidden > 0 {
            lines.push(format!("  … {hidden} finished steps above"));
        }
        lines.extend(body.into_iter().flat_map(|(_, l)| l));
        lines
    }

    fn draw(&mut self, out: &mut impl Write) {
        self.erase(out);
        if self.finished {
            return;
        }
        let (width, rows) = size();
        let lines = self.view(width.saturating_sub(1).max(20), rows, Instant::now());
        for l in &lines {
            let _ = writeln!(out, "{l}");
        }
        self.drawn = lines.len();
        self.last_draw = Some(Instant::now());
        let _ = out.flush();
    }
}

impl Tty {
    fn with(&self, f: impl FnOnce(&mut Screen, &mut std::io::StderrLock<'static>)) {
        let mut screen = self
            .screen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut err = std::io::stderr().lock();
        f(&mut screen, &mut err);
    }

    /// Redraws (the running steps' times move).
    pub fn tick(&self) {
        self.with(|s, err| s.draw(err));
    }

    /// Replaces the live view with the whole list of steps and their times.
    pub fn finish(&self) {
        self.with(|s, err| {
            s.erase(err);
            s.finished = true;
            let now = Instant::now();
            let done = s.steps.values().filter(|s| s.end.is_some()).count();
            let _ = writeln!(
                err,
                "[+] Building {:.1}s ({done}/{}) {}",
                (now - s.started).as_secs_f64(),
                s.steps.len(),
                if s.steps
                    .values()
                    .any(|s| matches!(s.end, Some((StepEnd::Failed(_), _))))
                {
                    "FAILED"
                } else {
                    "FINISHED"
                }
            );
            let (width, _) = size();
            let width = width.saturating_sub(1).max(20);
            for (id, step) in &s.steps {
                let st = status(step, now);
                let room = width.saturating_sub(st.len() + 1);
                let head = fit(&format!("#{id} {}", step.title), room);
                let pad = room.saturating_sub(head.chars().count());
                let _ = writeln!(err, "{head}{} {st}", " ".repeat(pad));
            }
            let _ = err.flush();
        });
    }
}

impl Progress for Tty {
    fn line(&self, line: &str) {
        let line = sanitize(line);
        self.with(|s, err| {
            s.erase(err);
            let _ = writeln!(err, "{line}");
            s.draw(err);
        });
    }

    fn start(&self, id: usize, title: &str) {
        let title = sanitize(title);
        self.with(|s, err| {
            s.steps.insert(
                id,
                Step {
                    title,
                    started: Instant::now(),
                    end: None,
                    tail: VecDeque::new(),
                    all: VecDeque::new(),
                    dropped: 0,
                },
            );
            s.draw(err);
        });
    }

    fn output(&self, id: usize, line: &str) {
        let line = sanitize(line);
        self.with(|s, err| {
            let Some(step) = s.steps.get_mut(&id) else {
                return;
            };
            if step.tail.len() == TAIL {
                step.tail.pop_front();
            }
            step.tail.push_back(line.clone());
            if step.all.len() == KEPT {
                step.all.pop_front();
                step.dropped += 1;
            }
            step.all.push_back(line);
            if s.last_draw.is_none_or(|t| t.elapsed() >= REDRAW) {
                s.draw(err);
            }
        });
    }

    fn end(&self, id: usize, end: &StepEnd, elapsed: Duration) {
        self.with(|s, err| {
            let Some(step) = s.steps.get_mut(&id) else {
                return;
            };
            step.end = Some((end.clone(), elapsed));
            if let StepEnd::Failed(why) = end {
                // The whole output of a failed step, above the live view.
                let step = &s.steps[&id];
                let mut text = format!("#{id} {}\n", step.title);
                if step.dropped > 0 {
                    text.push_str(&format!(
                        "#{id} … {} earlier lines not kept\n",
                        step.dropped
                    ));
                }
                for l in &step.all {
                    text.push_str(&format!("#{id} {l}\n"));
                }
                text.push_str(&format!("#{id} ERROR: {}\n", sanitize(why)));
                s.erase(err);
                let _ = write!(err, "{text}");
            }
            s.draw(err);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_drive_the_terminal() {
        assert_eq!(sanitize("plain text"), "plain text");
        assert_eq!(sanitize("a\tb"), "a b");
        assert_eq!(
            sanitize("\x1b[2J\x1b]0;pwned\x07\rx\u{9b}31m"),
            "\u{fffd}[2J\u{fffd}]0;pwned\u{fffd}\u{fffd}x\u{fffd}31m"
        );
    }

    #[test]
    fn the_view_fits_the_terminal_and_keeps_running_steps() {
        let now = Instant::now();
        let mut screen = Screen {
            started: now,
            steps: BTreeMap::new(),
            drawn: 0,
            last_draw: None,
            finished: false,
        };
        for id in 1..=30 {
            screen.steps.insert(
                id,
                Step {
                    title: format!("[{id}/31] RUN {}", "x".repeat(200)),
                    started: now,
                    end: Some((StepEnd::Done, Duration::from_millis(400))),
                    tail: VecDeque::new(),
                    all: VecDeque::new(),
                    dropped: 0,
                },
            );
        }
        let running = Step {
            title: "[31/31] RUN make".into(),
            started: now,
            end: None,
            tail: (0..TAIL).map(|i| format!("line {i}")).collect(),
            all: VecDeque::new(),
            dropped: 0,
        };
        screen.steps.insert(31, running);
        let view = screen.view(60, 20, now);
        assert!(view.len() <= 20, "{view:#?}");
        assert!(view.iter().all(|l| l.chars().count() <= 60), "{view:#?}");
        assert!(view.iter().any(|l| l.starts_with("#31 [31/31] RUN make")));
        assert!(view.iter().any(|l| l == "  > line 5"), "{view:#?}");
        assert!(view.iter().any(|l| l.contains("finished steps above")));
    }
}
