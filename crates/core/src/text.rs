//! Captions and their tokens: a word-level tokenizer over a dataset's caption vocabulary, and
//! the caption phrasings each dataset is described with.
//!
//! Words outside the vocabulary map to `<unk>` and are reported back to the caller (which warns
//! the user); an empty prompt is an error.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use crate::data::shapes::{COLOURS, POSITIONS, SHAPES, ShapeSpec};
use crate::data::{DatasetKind, idx};
use crate::error::{Error, Result};

pub const PAD: u32 = 0;
pub const UNK: u32 = 1;
/// The "no caption" token that classifier-free guidance trains the unconditional branch with.
pub const NULL: u32 = 2;
const SPECIAL: [&str; 3] = ["<pad>", "<unk>", "<null>"];

/// Lower-cased alphanumeric words.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tokenizer {
    /// Token id → word; ids 0..3 are `<pad>`, `<unk>`, `<null>`.
    pub vocab: Vec<String>,
    /// Sequences are padded or cut to this many tokens.
    pub max_len: usize,
}

/// A batch of encoded captions.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// (B, max_len) token ids, `<pad>`-filled.
    pub ids: Vec<u32>,
    pub batch: usize,
    pub max_len: usize,
    /// Words that were not in the vocabulary (mapped to `<unk>`).
    pub unknown: Vec<String>,
}

impl Tokenizer {
    /// A tokenizer whose vocabulary is every word of `captions`.
    pub fn from_captions<'a>(captions: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = BTreeSet::new();
        let mut longest = 1;
        for c in captions {
            let w = words(c);
            longest = longest.max(w.len());
            set.extend(w);
        }
        let mut vocab: Vec<String> = SPECIAL.iter().map(|s| s.to_string()).collect();
        vocab.extend(set);
        Self {
            vocab,
            max_len: longest + 2,
        }
    }

    pub fn len(&self) -> usize {
        self.vocab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vocab.is_empty()
    }

    fn id(&self, word: &str) -> Option<u32> {
        self.vocab.iter().position(|v| v == word).map(|i| i as u32)
    }

    /// Encodes one prompt given by a user: empty prompts are refused; unknown words are
    /// mapped to `<unk>` and listed in `unknown`.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Encoded> {
        if words(prompt).is_empty() {
            return Err(Error::Guidance(
                "the prompt is empty (give a caption such as \"a handwritten three\")".into(),
            ));
        }
        Ok(self.encode(&[prompt]))
    }

    /// Encodes captions (an empty caption becomes the `<null>` caption).
    pub fn encode(&self, captions: &[&str]) -> Encoded {
        let mut ids = vec![PAD; captions.len() * self.max_len];
        let mut unknown = vec![];
        for (b, c) in captions.iter().enumerate() {
            let w = words(c);
            let row = &mut ids[b * self.max_len..(b + 1) * self.max_len];
            if w.is_empty() {
                row[0] = NULL;
                continue;
            }
            for (i, word) in w.iter().take(self.max_len).enumerate() {
                row[i] = match self.id(word) {
                    Some(id) if id >= SPECIAL.len() as u32 => id,
                    _ => {
                        if !unknown.contains(word) {
                            unknown.push(word.clone());
                        }
                        UNK
                    }
                };
            }
        }
        Encoded {
            ids,
            batch: captions.len(),
            max_len: self.max_len,
            unknown,
        }
    }

    /// `n` `<null>` captions.
    pub fn null(&self, n: usize) -> Encoded {
        self.encode(&vec![""; n])
    }
}

const NUMBER_WORDS: [&str; 10] = idx::MNIST_CLASSES;

/// Which image attributes a caption pins down: [class or shape, colour, position]; `None` is
/// "any". An image's attributes are `ImageDataset::attributes`.
pub type Constraint = [Option<u8>; 3];

/// Whether an image with `attrs` satisfies a caption's constraint.
pub fn satisfies(constraint: &Constraint, attrs: &[u8; 3]) -> bool {
    constraint
        .iter()
        .zip(attrs)
        .all(|(c, a)| c.is_none_or(|c| c == *a))
}

/// A caption and what it means.
#[derive(Debug, Clone, PartialEq)]
pub struct Phrase {
    pub text: String,
    pub constraint: Constraint,
}

/// Every way MNIST describes a class: "a handwritten seven", "the digit 7", "7",
/// "the number seven", "a seven".
pub fn mnist_phrasings(class: usize) -> Vec<Phrase> {
    let w = NUMBER_WORDS[class];
    let c = [Some(class as u8), None, None];
    [
        format!("a handwritten {w}"),
        format!("the digit {class}"),
        format!("{class}"),
        format!("the number {w}"),
        format!("a {w}"),
    ]
    .into_iter()
    .map(|text| Phrase {
        text,
        constraint: c,
    })
    .collect()
}

/// Phrasings of a shapes image: its full caption and shorter partial descriptions.
pub fn shapes_phrasings(spec: &ShapeSpec) -> Vec<Phrase> {
    let (c, s, p) = (
        COLOURS[spec.colour].0,
        SHAPES[spec.shape],
        POSITIONS[spec.position],
    );
    let (sh, co, po) = (
        Some(spec.shape as u8),
        Some(spec.colour as u8),
        Some(spec.position as u8),
    );
    vec![
        Phrase {
            text: spec.caption(),
            constraint: [sh, co, po],
        },
        Phrase {
            text: format!("a {c} {s}"),
            constraint: [sh, co, None],
        },
        Phrase {
            text: format!("{c} {s} in the {p}"),
            constraint: [sh, co, po],
        },
        Phrase {
            text: format!("a {s} in the {p}"),
            constraint: [sh, None, po],
        },
    ]
}

/// The phrasings of an image of a dataset with these attributes.
pub fn phrasings(kind: DatasetKind, attrs: &[u8; 3]) -> Result<Vec<Phrase>> {
    match kind {
        DatasetKind::Mnist => Ok(mnist_phrasings(attrs[0] as usize)),
        DatasetKind::Shapes => Ok(shapes_phrasings(&ShapeSpec {
            shape: attrs[0] as usize,
            colour: attrs[1] as usize,
            position: attrs[2] as usize,
            large: false,
        })),
        other => Err(unsupported(other)),
    }
}

fn unsupported(kind: DatasetKind) -> Error {
    Error::Guidance(format!(
        "text conditioning is available for the mnist and shapes datasets, not {kind}"
    ))
}

/// A caption for each training image: one of its phrasings, drawn at random, so a
/// caption-conditioned model learns every way of asking.
pub fn training_captions(
    kind: DatasetKind,
    attrs: &[[u8; 3]],
    rng: &mut crate::rng::Rng,
) -> Result<Vec<String>> {
    attrs
        .iter()
        .map(|a| {
            let mut p = phrasings(kind, a)?;
            let i = rng.below(p.len());
            Ok(p.swap_remove(i).text)
        })
        .collect()
}

/// The vocabulary of a dataset's captions in every phrasing.
pub fn dataset_tokenizer(kind: DatasetKind) -> Result<Tokenizer> {
    let captions: Vec<String> = match kind {
        DatasetKind::Mnist => (0..10).flat_map(mnist_phrasings).map(|p| p.text).collect(),
        DatasetKind::Shapes => all_shape_specs()
            .iter()
            .flat_map(shapes_phrasings)
            .map(|p| p.text)
            .collect(),
        other => return Err(unsupported(other)),
    };
    Ok(Tokenizer::from_captions(
        captions.iter().map(String::as_str),
    ))
}

/// The canonical caption of each class a judge or zero-shot classifier tells apart, with its
/// constraint: MNIST's ten digits; for shapes every (shape, colour, position).
pub fn class_prompts(kind: DatasetKind) -> Result<Vec<Phrase>> {
    match kind {
        DatasetKind::Mnist => Ok((0..10).map(|c| mnist_phrasings(c).remove(0)).collect()),
        DatasetKind::Shapes => Ok(all_shape_specs()
            .iter()
            .map(|s| shapes_phrasings(s).remove(0))
            .collect()),
        other => Err(unsupported(other)),
    }
}

/// What a user's prompt asks for, read from its words, so a judge can check samples against
/// it. Names no attribute at all → error.
pub fn parse_prompt(kind: DatasetKind, prompt: &str) -> Result<Constraint> {
    let w = words(prompt);
    let joined = w.join(" ");
    let mut c: Constraint = [None, None, None];
    match kind {
        DatasetKind::Mnist => {
            for (i, name) in NUMBER_WORDS.iter().enumerate() {
                if w.iter().any(|x| x == name || *x == i.to_string()) {
                    if c[0].is_some_and(|p| p != i as u8) {
                        return Err(Error::Guidance(format!(
                            "the prompt \"{prompt}\" names two different digits"
                        )));
                    }
                    c[0] = Some(i as u8);
                }
            }
        }
        DatasetKind::Shapes => {
            c[0] = SHAPES
                .iter()
                .position(|s| w.iter().any(|x| x == s))
                .map(|i| i as u8);
            c[1] = COLOURS
                .iter()
                .position(|(n, _)| w.iter().any(|x| x == n))
                .map(|i| i as u8);
            // Two-word positions first, so "top left" is not read as something shorter.
            c[2] = POSITIONS
                .iter()
                .position(|p| joined.contains(p))
                .map(|i| i as u8);
        }
        other => return Err(unsupported(other)),
    }
    if c.iter().all(Option::is_none) {
        return Err(Error::Guidance(format!(
            "the prompt \"{prompt}\" names nothing the {kind} dataset's classes describe"
        )));
    }
    Ok(c)
}

/// Every (shape, colour, position) combination, small size.
pub fn all_shape_specs() -> Vec<ShapeSpec> {
    let mut v = vec![];
    for shape in 0..SHAPES.len() {
        for colour in 0..COLOURS.len() {
            for position in 0..POSITIONS.len() {
                v.push(ShapeSpec {
                    shape,
                    colour,
                    position,
                    large: false,
                });
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_words_become_unk_and_are_reported() {
        let t = dataset_tokenizer(DatasetKind::Mnist).unwrap();
        let e = t.encode_prompt("A handwritten SEVEN, please").unwrap();
        let row = &e.ids[..t.max_len];
        assert_eq!(t.vocab[row[0] as usize], "a");
        assert_eq!(t.vocab[row[2] as usize], "seven");
        assert_eq!(row[3], UNK);
        assert_eq!(e.unknown, vec!["please".to_string()]);
        assert!(row[4..].iter().all(|&i| i == PAD));
        assert!(t.encode_prompt("  ,, ").is_err());
        assert_eq!(t.null(2).ids[0], NULL);
        // Every phrasing is fully known.
        for c in 0..10 {
            for p in mnist_phrasings(c) {
                assert!(t.encode(&[&p.text]).unknown.is_empty(), "{}", p.text);
            }
        }
        let s = dataset_tokenizer(DatasetKind::Shapes).unwrap();
        assert!(
            s.encode(&["a red circle in the top left"])
                .unknown
                .is_empty()
        );
        assert!(dataset_tokenizer(DatasetKind::Cifar10).is_err());
    }

    #[test]
    fn prompts_are_read_for_what_they_ask() {
        assert_eq!(
            parse_prompt(DatasetKind::Mnist, "a handwritten three").unwrap(),
            [Some(3), None, None]
        );
        assert_eq!(
            parse_prompt(DatasetKind::Mnist, "the digit 7").unwrap(),
            [Some(7), None, None]
        );
        assert!(parse_prompt(DatasetKind::Mnist, "a cat").is_err());
        assert!(parse_prompt(DatasetKind::Mnist, "3 or seven").is_err());
        let c = parse_prompt(DatasetKind::Shapes, "a red circle in the top left").unwrap();
        assert_eq!(c, [Some(0), Some(0), Some(0)]);
        assert_eq!(
            parse_prompt(DatasetKind::Shapes, "a blue square").unwrap(),
            [Some(1), Some(2), None]
        );
        assert!(satisfies(&[Some(1), None, None], &[1, 4, 7]));
        assert!(!satisfies(&[Some(1), Some(2), None], &[1, 4, 7]));
        assert_eq!(class_prompts(DatasetKind::Shapes).unwrap().len(), 162);
    }
}
