//! The hierarchical LwM2M node model (object / object instance / resource / multiple-instance
//! resource), built from and flattened to the `Record` lists the codecs speak.
//!
//! Codecs work on flat records because every content format can be read as "values at full
//! paths"; the tree is for callers that need the structure (which instances exist, whether a
//! resource is multiple). Conversion is lossless for well-formed record lists; records whose paths
//! conflict (a value both at `/3/0/7` and at `/3/0/7/0`) are rejected instead of guessed.

use std::collections::BTreeMap;

use super::{Path, Record, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Object {
        id: u16,
        instances: BTreeMap<u16, BTreeMap<u16, Resource>>,
    },
    Instance {
        object: u16,
        id: u16,
        resources: BTreeMap<u16, Resource>,
    },
    Resource {
        path: Path,
        resource: Resource,
    },
    /// One instance of a multiple-instance resource.
    ResourceInstance {
        path: Path,
        value: Value,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Single(Value),
    Multiple(BTreeMap<u16, Value>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("record {0} lies outside {1}")]
    OutsideBase(Path, Path),
    #[error("record {0} conflicts with another value at the same resource")]
    Conflict(Path),
    #[error("record {0} is not a resource or resource-instance path")]
    NotAValue(Path),
    #[error("no record for a single value at {0}")]
    Empty(Path),
}

type Instances = BTreeMap<u16, BTreeMap<u16, Resource>>;

fn insert(tree: &mut Instances, r: &Record) -> Result<(), NodeError> {
    let ids = r.path.ids();
    let (o, i, res) = match ids {
        [_, i, res] | [_, i, res, _] => (ids[0], *i, *res),
        _ => return Err(NodeError::NotAValue(r.path)),
    };
    let _ = o;
    let resources = tree.entry(i).or_default();
    match (ids.get(3), resources.get_mut(&res)) {
        (None, None) => {
            resources.insert(res, Resource::Single(r.value.clone()));
        }
        (Some(ri), None) => {
            resources.insert(
                res,
                Resource::Multiple(BTreeMap::from([(*ri, r.value.clone())])),
            );
        }
        (Some(ri), Some(Resource::Multiple(m))) if !m.contains_key(ri) => {
            m.insert(*ri, r.value.clone());
        }
        _ => return Err(NodeError::Conflict(r.path)),
    }
    Ok(())
}

impl Node {
    /// Builds the node at `base` (1 to 4 segments) from records at or below it.
    pub fn from_records(base: &Path, records: &[Record]) -> Result<Node, NodeError> {
        let mut tree = Instances::new();
        for r in records {
            if !r.path.starts_with(base) || r.path.object() != base.object() {
                return Err(NodeError::OutsideBase(r.path, *base));
            }
            insert(&mut tree, r)?;
        }
        let ids = base.ids();
        match ids.len() {
            1 => Ok(Node::Object {
                id: ids[0],
                instances: tree,
            }),
            2 => Ok(Node::Instance {
                object: ids[0],
                id: ids[1],
                resources: tree.remove(&ids[1]).unwrap_or_default(),
            }),
            3 => {
                let resource = tree
                    .remove(&ids[1])
                    .and_then(|mut m| m.remove(&ids[2]))
                    .ok_or(NodeError::Empty(*base))?;
                Ok(Node::Resource {
                    path: *base,
                    resource,
                })
            }
            4 => {
                let value = match tree.remove(&ids[1]).and_then(|mut m| m.remove(&ids[2])) {
                    Some(Resource::Multiple(mut m)) => {
                        m.remove(&ids[3]).ok_or(NodeError::Empty(*base))?
                    }
                    _ => return Err(NodeError::Empty(*base)),
                };
                Ok(Node::ResourceInstance { path: *base, value })
            }
            _ => Err(NodeError::NotAValue(*base)),
        }
    }

    /// Flattens the node into records in path order.
    pub fn to_records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let push_resource = |out: &mut Vec<Record>, path: Path, r: &Resource| match r {
            Resource::Single(v) => out.push(Record::new(path, v.clone())),
            Resource::Multiple(m) => {
                for (ri, v) in m {
                    if let Some(p) = path.child(*ri) {
                        out.push(Record::new(p, v.clone()));
                    }
                }
            }
        };
        match self {
            Node::Object { id, instances } => {
                for (i, resources) in instances {
                    for (r, res) in resources {
                        if let Some(p) = Path::from_ids(&[*id, *i, *r]) {
                            push_resource(&mut out, p, res);
                        }
                    }
                }
            }
            Node::Instance {
                object,
                id,
                resources,
            } => {
                for (r, res) in resources {
                    if let Some(p) = Path::from_ids(&[*object, *id, *r]) {
                        push_resource(&mut out, p, res);
                    }
                }
            }
            Node::Resource { path, resource } => push_resource(&mut out, *path, resource),
            Node::ResourceInstance { path, value } => out.push(Record::new(*path, value.clone())),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(p: &str, v: Value) -> Record {
        Record::new(Path::parse(p).unwrap(), v)
    }

    #[test]
    fn builds_every_level_and_round_trips() {
        let records = vec![
            rec("/3/0/0", Value::String("OMA".into())),
            rec("/3/0/7/0", Value::Integer(3800)),
            rec("/3/0/7/1", Value::Integer(5000)),
            rec("/3/1/9", Value::Integer(87)),
        ];
        let obj = Node::from_records(&Path::parse("/3").unwrap(), &records).unwrap();
        let Node::Object { instances, .. } = &obj else {
            panic!()
        };
        assert_eq!(instances.len(), 2);
        assert_eq!(
            instances[&0][&7],
            Resource::Multiple(BTreeMap::from([
                (0, Value::Integer(3800)),
                (1, Value::Integer(5000))
            ]))
        );
        assert_eq!(obj.to_records(), records);

        let inst = Node::from_records(&Path::parse("/3/0").unwrap(), &records[..3]).unwrap();
        assert_eq!(inst.to_records(), records[..3].to_vec());
        let res = Node::from_records(&Path::parse("/3/0/7").unwrap(), &records[1..3]).unwrap();
        assert!(matches!(
            res,
            Node::Resource {
                resource: Resource::Multiple(_),
                ..
            }
        ));
        let ri = Node::from_records(&Path::parse("/3/0/7/1").unwrap(), &records[2..3]).unwrap();
        assert_eq!(
            ri,
            Node::ResourceInstance {
                path: Path::parse("/3/0/7/1").unwrap(),
                value: Value::Integer(5000)
            }
        );
    }

    #[test]
    fn rejects_conflicts_and_strays() {
        let base = Path::parse("/3/0").unwrap();
        let clash = [
            rec("/3/0/7", Value::Integer(1)),
            rec("/3/0/7/0", Value::Integer(2)),
        ];
        assert!(matches!(
            Node::from_records(&base, &clash),
            Err(NodeError::Conflict(_))
        ));
        let dup = [
            rec("/3/0/1", Value::Integer(1)),
            rec("/3/0/1", Value::Integer(2)),
        ];
        assert!(matches!(
            Node::from_records(&base, &dup),
            Err(NodeError::Conflict(_))
        ));
        let stray = [rec("/4/0/1", Value::Integer(1))];
        assert!(matches!(
            Node::from_records(&base, &stray),
            Err(NodeError::OutsideBase(..))
        ));
        let shallow = [rec("/3/0", Value::Integer(1))];
        assert!(matches!(
            Node::from_records(&base, &shallow),
            Err(NodeError::NotAValue(_))
        ));
        assert!(matches!(
            Node::from_records(&Path::parse("/3/0/5").unwrap(), &[]),
            Err(NodeError::Empty(_))
        ));
    }
}
