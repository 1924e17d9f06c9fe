//! [`Checkpoint`]: where a read of all streams, or a subscription to them, stands.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a read of all streams stands: for each partition, the position in
/// its log of the last event delivered (or passed over by the filter).
/// Reading from a checkpoint continues right after it in every partition,
/// on any node, so no event is repeated or skipped.
///
/// Printed (and parsed) as `p<partition>:<position>` pairs separated by
/// commas, e.g. `p0:12,p1:7,p3:31`; partitions left out are at 0 (nothing
/// read yet), and `start` (or an empty string) is the beginning of every log. It serializes
/// to JSON as that string. A checkpoint taken with a filter is only
/// meaningful with the same filter (it may have passed over events the
/// filter excluded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// `positions[p]` is partition p's position; no trailing zeros.
    positions: Vec<u64>,
}

impl Checkpoint {
    /// The beginning of every partition's log.
    pub fn start() -> Checkpoint {
        Checkpoint::default()
    }

    /// A checkpoint from one position per partition, in partition order.
    pub fn from_positions(mut positions: Vec<u64>) -> Checkpoint {
        while positions.last() == Some(&0) {
            positions.pop();
        }
        Checkpoint { positions }
    }

    /// The positions per partition, in partition order (partitions past the
    /// end are at 0).
    pub fn positions(&self) -> &[u64] {
        &self.positions
    }

    /// The position of `partition` (0 = nothing read yet).
    pub fn position(&self, partition: u32) -> u64 {
        self.positions.get(partition as usize).copied().unwrap_or(0)
    }

    /// Whether this is the beginning of every log.
    pub fn is_start(&self) -> bool {
        self.positions.is_empty()
    }
}

impl fmt::Display for Checkpoint {
    /// `p0:12,p3:7,...` (partitions at 0 left out), or `start`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.positions.is_empty() {
            return f.write_str("start");
        }
        let mut first = true;
        for (p, position) in self.positions.iter().enumerate() {
            if *position > 0 {
                let comma = if first { "" } else { "," };
                write!(f, "{comma}p{p}:{position}")?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Most partitions a checkpoint may name (a typo guard, far above any cluster).
const MAX_PARTITIONS: u64 = 1 << 16;

impl FromStr for Checkpoint {
    type Err = String;

    /// Accepts `start`, an empty string, or `p<partition>:<position>` pairs
    /// separated by commas, in any order (the `p` is optional).
    fn from_str(text: &str) -> Result<Checkpoint, String> {
        let text = text.trim();
        if text.is_empty() || text == "start" {
            return Ok(Checkpoint::start());
        }
        let mut positions = Vec::new();
        for entry in text.split(',').map(str::trim) {
            let bad = |why: &str| {
                format!("`{entry}` {why}; expected p<partition>:<position>[,...], e.g. p0:12,p1:7")
            };
            let (partition, position) = entry
                .split_once(':')
                .ok_or_else(|| bad("is not partition:position"))?;
            let partition = partition.trim();
            let partition: u64 = partition
                .strip_prefix('p')
                .unwrap_or(partition)
                .parse()
                .map_err(|_| bad("has no partition number"))?;
            let position: u64 = position
                .trim()
                .parse()
                .map_err(|_| bad("has no position number"))?;
            if partition >= MAX_PARTITIONS {
                return Err(bad("names a partition that cannot exist"));
            }
            let p = partition as usize;
            if positions.len() <= p {
                positions.resize(p + 1, None);
            }
            if positions[p].replace(position).is_some() {
                return Err(format!(
                    "partition {partition} appears twice in the checkpoint"
                ));
            }
        }
        Ok(Checkpoint::from_positions(
            positions
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect(),
        ))
    }
}

impl Serialize for Checkpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Checkpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Checkpoint, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_parses_back() {
        let cp = Checkpoint::from_positions(vec![12, 0, 7, 0, 0]);
        assert_eq!(cp.to_string(), "p0:12,p2:7");
        assert_eq!(cp.to_string().parse::<Checkpoint>().unwrap(), cp);
        assert_eq!(cp.position(2), 7);
        assert_eq!(cp.position(9), 0);
        assert_eq!(Checkpoint::start().to_string(), "start");
        assert!("start".parse::<Checkpoint>().unwrap().is_start());
        assert!("".parse::<Checkpoint>().unwrap().is_start());
        assert_eq!(
            "p2:7, 0:12".parse::<Checkpoint>().unwrap().positions(),
            [12, 0, 7]
        );
        assert_eq!(Checkpoint::from_positions(vec![0, 0]), Checkpoint::start());
    }

    #[test]
    fn refuses_malformed_checkpoints() {
        for (bad, why) in [
            ("p0", "is not partition:position"),
            ("px:1", "has no partition number"),
            ("p0:-1", "has no position number"),
            ("p0:1,,p1:2", "is not partition:position"),
            ("p999999:1", "cannot exist"),
            ("p1:1,p1:2", "appears twice"),
        ] {
            let err = bad.parse::<Checkpoint>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn serializes_as_its_string() {
        let cp = Checkpoint::from_positions(vec![3, 4]);
        let json = serde_json::to_value(&cp).unwrap();
        assert_eq!(json, serde_json::json!("p0:3,p1:4"));
        assert_eq!(serde_json::from_value::<Checkpoint>(json).unwrap(), cp);
    }
}
