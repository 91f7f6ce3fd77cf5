//! Filter graph text: splitting into chains and filters, and rewriting filters the engine does
//! differently (HDR tonemap chains, Plex's `inlineass`).

/// One filter in a chain: the text as written, with its name split off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterText {
    /// Input pad labels before the filter (`[0:1]`).
    pub inputs: Vec<String>,
    pub name: String,
    /// Argument text after `=` (empty when none), escapes intact.
    pub args: String,
    /// Output pad labels after the filter.
    pub outputs: Vec<String>,
}

impl FilterText {
    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.inputs {
            s.push('[');
            s.push_str(l);
            s.push(']');
        }
        s.push_str(&self.name);
        if !self.args.is_empty() {
            s.push('=');
            s.push_str(&self.args);
        }
        for l in &self.outputs {
            s.push('[');
            s.push_str(l);
            s.push(']');
        }
        s
    }
}

/// Splits `s` at each top-level `sep`, honouring `'...'` quoting and `\` escapes.
pub fn split_top(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if !quoted => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '\'' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c == sep && !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

fn take_leading_labels(s: &str) -> (Vec<String>, &str) {
    let mut labels = Vec::new();
    let mut rest = s.trim_start();
    while let Some(stripped) = rest.strip_prefix('[') {
        match stripped.find(']') {
            Some(end) => {
                labels.push(stripped[..end].to_string());
                rest = stripped[end + 1..].trim_start();
            }
            None => break,
        }
    }
    (labels, rest)
}

fn take_trailing_labels(s: &str) -> (&str, Vec<String>) {
    let mut labels = Vec::new();
    let mut rest = s.trim_end();
    while rest.ends_with(']') {
        let Some(open) = rest.rfind('[') else { break };
        // A `[` inside quotes would be part of an argument; Plex and Jellyfin never quote one.
        labels.push(rest[open + 1..rest.len() - 1].to_string());
        rest = rest[..open].trim_end();
    }
    labels.reverse();
    (rest, labels)
}

/// Parses one chain (`[in]f1=a,f2=b[out]`) into filters.
pub fn parse_chain(chain: &str) -> Vec<FilterText> {
    let pieces = split_top(chain, ',');
    let mut filters: Vec<FilterText> = Vec::new();
    for piece in pieces {
        let (inputs, rest) = take_leading_labels(&piece);
        let (body, outputs) = take_trailing_labels(rest);
        let (name, args) = match body.split_once('=') {
            Some((n, a)) => (n.trim().to_string(), a.to_string()),
            None => (body.trim().to_string(), String::new()),
        };
        filters.push(FilterText {
            inputs,
            name,
            args,
            outputs,
        });
    }
    // Plex writes `inlineass` option values with bare commas (`overrides=A=1,B=2`) and always
    // puts it last in its chain, so everything after it belongs to its arguments.
    if let Some(pos) = filters.iter().position(|f| f.name == "inlineass")
        && pos + 1 < filters.len()
    {
        let tail: Vec<FilterText> = filters.split_off(pos + 1);
        let f = &mut filters[pos];
        for mut piece in tail {
            let outs = std::mem::take(&mut piece.outputs);
            f.args.push(',');
            f.args.push_str(&piece.render());
            f.outputs = outs;
        }
    }
    filters
}

/// Parses a whole graph into chains of filters.
pub fn parse_graph(graph: &str) -> Vec<Vec<FilterText>> {
    split_top(graph, ';')
        .iter()
        .map(|c| parse_chain(c))
        .collect()
}

/// Renders chains back into graph text.
pub fn render_graph(chains: &[Vec<FilterText>]) -> String {
    chains
        .iter()
        .map(|c| {
            c.iter()
                .map(FilterText::render)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Names of every filter in a graph, in order.
pub fn filter_names(graph: &str) -> Vec<String> {
    parse_graph(graph)
        .into_iter()
        .flatten()
        .map(|f| f.name)
        .filter(|n| !n.is_empty())
        .collect()
}
