//! `target = { hosts = [...], labels = {...} }`, on a document or a resource.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use super::{Decoder, Field};
use crate::node::{Node, Value};
use crate::target::{HostGlob, Target, check_label_key};

impl Decoder<'_> {
    /// Decodes a target; `None` (with diagnostics) when anything is wrong.
    pub(crate) fn target(&mut self, node: &Node, field: &Field<'_>) -> Option<Target> {
        let errors = self.diags.len();
        let f = self.fields(
            node,
            field,
            &["hosts", "labels"],
            &[
                ("host", "hosts"),
                ("hostnames", "hosts"),
                ("names", "hosts"),
                ("label", "labels"),
            ],
        )?;
        let mut target = Target::default();
        if let Some(n) = f.get("hosts") {
            let hf = field.key("hosts");
            if matches!(&n.value, Value::Seq(items) if items.is_empty()) {
                self.error(
                    n.pos,
                    &hf,
                    "an empty list matches no host; list host name globs, or leave hosts out",
                );
            }
            for (glob, pos, i) in self.strings(n, &hf) {
                if let Some(g) = self.check(pos, &hf.item(i), HostGlob::new(&glob)) {
                    target.hosts.push(g);
                }
            }
        }
        if let Some(n) = f.get("labels") {
            let lf = field.key("labels");
            let mut labels = BTreeMap::new();
            for (k, v, pos) in self.string_map(n, &lf, "a label") {
                if self.check(pos, &lf.key(&k), check_label_key(&k)).is_none() {
                    continue;
                }
                match labels.entry(k) {
                    Entry::Vacant(e) => {
                        e.insert(v);
                    }
                    // The last one given wins, as with any map.
                    Entry::Occupied(mut e) => {
                        e.insert(v);
                        self.error(pos, &lf.key(e.key()), "label given twice");
                    }
                }
            }
            target.labels = labels;
        }
        if target.hosts.is_empty() && target.labels.is_empty() && self.diags.len() == errors {
            self.error(
                f.pos,
                field,
                "a target needs hosts, labels or both (leave target out to apply to every host)",
            );
        }
        (self.diags.len() == errors).then_some(target)
    }
}
