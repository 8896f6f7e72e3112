//! Training end to end on the bundled corpus, small enough for CI: the loss falls,
//! runs are deterministic, a resumed run equals an uninterrupted one, a process killed
//! while saving keeps the previous checkpoint, bad checkpoints are listed errors, and
//! sampling is seeded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use adjoint::tensorfile::{TensorFile, temporary};
use adjoint_examples::train::corpus::{BUNDLED, Corpus};
use adjoint_examples::train::generate::{Sampling, generate};
use adjoint_examples::train::{Config, OptimizerKind, Trainer, checkpoint};

fn small(optimizer: OptimizerKind) -> Config {
    Config {
        d_model: 32,
        heads: 2,
        d_ff: 64,
        layers: 1,
        context: 32,
        batch: 8,
        steps: 80,
        seed: 5,
        optimizer,
        lr: if optimizer == OptimizerKind::Sgd { 0.5 } else { 3e-3 },
        warmup: 10,
        eval_batches: 4,
        ..Config::default()
    }
}

fn corpus(context: usize) -> Corpus {
    Corpus::new(BUNDLED, 0.1, context).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adjoint-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn losses(t: &mut Trainer, corpus: &Corpus, steps: usize) -> Vec<f32> {
    (0..steps).map(|_| t.train_step(corpus).unwrap().loss).collect()
}

#[test]
fn a_short_run_on_the_bundled_corpus_lowers_the_validation_loss() {
    let c = corpus(32);
    let mut t = Trainer::new(small(OptimizerKind::AdamW), &c).unwrap();
    let before = t.evaluate(&c).unwrap();
    assert!((before - 256f32.ln()).abs() < 0.3, "a fresh model is near-uniform over bytes: {before}");
    let l = losses(&mut t, &c, 80);
    let after = t.evaluate(&c).unwrap();
    // Uniform over bytes is ln 256 = 5.55 nats; English bytes' unigram entropy is about
    // 3 nats, so learning little more than letter frequencies already gains 1.5.
    assert!(after < before - 1.5, "validation loss {before} → {after}");
    assert!(l[70..].iter().sum::<f32>() / 10.0 < l[..10].iter().sum::<f32>() / 10.0 - 1.5, "{l:?}");
}

#[test]
fn the_same_seed_gives_the_same_losses_and_another_seed_does_not() {
    let c = corpus(32);
    let run = |seed| {
        let mut t = Trainer::new(Config { seed, ..small(OptimizerKind::AdamW) }, &c).unwrap();
        losses(&mut t, &c, 5)
    };
    let a = run(5);
    assert_eq!(a, run(5));
    assert_ne!(a, run(6));
}

#[test]
fn a_resumed_run_repeats_the_uninterrupted_one_exactly() {
    let dir = scratch("resume");
    let c = corpus(32);
    for optimizer in [OptimizerKind::AdamW, OptimizerKind::Sgd] {
        let config = small(optimizer);
        let mut whole = Trainer::new(config.clone(), &c).unwrap();
        let expected = losses(&mut whole, &c, 12);
        let val = whole.evaluate(&c).unwrap();

        let mut first = Trainer::new(config, &c).unwrap();
        let mut got = losses(&mut first, &c, 5);
        first.evaluate(&c).unwrap(); // evaluation must not disturb the data stream
        let path = dir.join(format!("{optimizer:?}.safetensors"));
        checkpoint::save(&first, &path).unwrap();
        drop(first);
        let mut resumed = checkpoint::resume(&path, &c).unwrap();
        assert_eq!(resumed.step, 5);
        got.extend(losses(&mut resumed, &c, 7));
        assert_eq!(got, expected, "{optimizer:?}: losses must match bit for bit");
        assert_eq!(resumed.evaluate(&c).unwrap(), val);
        let (a, b) = (resumed.params.named(), whole.params.named());
        assert!(a.iter().zip(&b).all(|(x, y)| x == y), "{optimizer:?}: parameters differ");
    }
}

#[test]
fn corrupt_truncated_and_mismatched_checkpoints_are_listed_errors() {
    let dir = scratch("bad");
    let c = corpus(32);
    let mut t = Trainer::new(small(OptimizerKind::AdamW), &c).unwrap();
    losses(&mut t, &c, 1);
    let good = dir.join("good.safetensors");
    checkpoint::save(&t, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    // Truncated anywhere, or bytes flipped: an error, never a panic.
    let cut = dir.join("cut.safetensors");
    for len in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let e = checkpoint::resume(&cut, &c).err().expect("truncated file accepted");
        assert!(e.contains("not a valid safetensors file"), "{e}");
    }
    let mut flipped = bytes.clone();
    for i in (0..flipped.len()).step_by(97) {
        flipped[i] ^= 0xff;
    }
    std::fs::write(&cut, &flipped).unwrap();
    assert!(checkpoint::resume(&cut, &c).is_err());

    // Mismatched tensors: every problem in one error.
    let mut file = TensorFile::read(&good).unwrap();
    file.reals.remove("h0.attn.wq");
    file.reals.remove("adamw.v.wpe");
    file.reals.insert("h0.attn.wz".into(), file.reals["h0.attn.wk"].clone());
    file.reals.insert("lnf.g".into(), adjoint::ndarray::ArrayD::zeros(vec![31]));
    let bad = dir.join("mismatched.safetensors");
    let tensors: Vec<(String, &_)> = file.reals.iter().map(|(k, v)| (k.clone(), v)).collect();
    TensorFile::write_atomic(&bad, &tensors, &file.metadata).unwrap();
    let e = checkpoint::resume(&bad, &c).err().expect("mismatched file accepted");
    for want in [
        "missing tensor `h0.attn.wq` [32, 32]",
        "missing tensor `adamw.v.wpe` [32, 32]",
        "unexpected tensor `h0.attn.wz`",
        "`lnf.g` has shape [31], expected [32]",
    ] {
        assert!(e.contains(want), "`{want}` not in:\n{e}");
    }
    let e = checkpoint::load_model(&bad).expect_err("mismatched file accepted for sampling");
    assert!(e.contains("missing tensor `h0.attn.wq`") && e.contains("unexpected tensor `h0.attn.wz`"), "{e}");

    // Metadata: missing and malformed entries, listed together.
    let mut meta: BTreeMap<String, String> = file.metadata.clone();
    meta.remove("heads");
    meta.insert("lr".into(), "fast".into());
    meta.insert("optimizer".into(), "lion".into());
    let good_file = TensorFile::read(&good).unwrap();
    let tensors: Vec<(String, &_)> = good_file.reals.iter().map(|(k, v)| (k.clone(), v)).collect();
    TensorFile::write_atomic(&bad, &tensors, &meta).unwrap();
    let e = checkpoint::resume(&bad, &c).err().expect("bad metadata accepted");
    for want in
        ["metadata `heads` is missing", "`lr` = `fast` is not a number", "`lion` is not `sgd` or `adamw`"]
    {
        assert!(e.contains(want), "`{want}` not in:\n{e}");
    }
    // Not ours at all, and the wrong corpus.
    TensorFile::write_atomic(&bad, &tensors, &BTreeMap::new()).unwrap();
    assert!(checkpoint::resume(&bad, &c).err().unwrap().contains("no `format` metadata"));
    let other = Corpus::new(&BUNDLED[..200_000], 0.1, 32).unwrap();
    assert!(checkpoint::resume(&good, &other).err().unwrap().contains("different corpus"));
    // Absurd dimensions are refused before anything is allocated.
    meta = good_file.metadata.clone();
    meta.insert("layers".into(), "100000000000".into());
    TensorFile::write_atomic(&bad, &tensors, &meta).unwrap();
    assert!(checkpoint::resume(&bad, &c).err().unwrap().contains("above the limit"));
    // And the good file still loads.
    assert_eq!(checkpoint::resume(&good, &c).unwrap().step, 1);
}

#[test]
fn sampling_is_deterministic_for_a_seed() {
    let c = corpus(32);
    let mut t = Trainer::new(small(OptimizerKind::AdamW), &c).unwrap();
    losses(&mut t, &c, 3);
    let s = |seed| {
        generate(&t.params, "The ", Sampling { tokens: 40, temperature: 1.0, top_k: 0, seed }).unwrap()
    };
    let a = s(1);
    assert!(a.starts_with("The "));
    assert_eq!(a, s(1));
    assert_ne!(a, s(2));
    // A prompt longer than the context slides the window.
    let long = "x".repeat(50);
    let greedy = Sampling { tokens: 3, temperature: 0.0, top_k: 1, seed: 0 };
    let g = generate(&t.params, &long, greedy).unwrap();
    assert!(g.starts_with(&long) && g.len() > long.len(), "{g:?}");
    assert_eq!(
        g,
        generate(&t.params, &long, Sampling { seed: 9, ..greedy }).unwrap(),
        "greedy ignores the seed"
    );
}

/// Set in the child process of the kill test: it saves checkpoints in a loop.
const CHILD: &str = "ADJOINT_TEST_SAVE_LOOP";

#[test]
fn save_loop_child() {
    let Ok(path) = std::env::var(CHILD) else { return };
    // Big enough that a save takes a while: ~10 M parameters and AdamW state.
    let config =
        Config { d_model: 512, heads: 8, d_ff: 2048, layers: 3, context: 32, ..small(OptimizerKind::Sgd) };
    let c = corpus(32);
    let mut t = Trainer::new(config, &c).unwrap();
    loop {
        t.step += 1;
        checkpoint::save(&t, &path).unwrap();
    }
}

#[test]
fn killing_a_process_while_it_saves_keeps_the_previous_checkpoint() {
    let dir = scratch("kill");
    let path = dir.join("run.safetensors");
    let tmp = temporary(&path);
    let c = corpus(32);
    let mut mid_save_kills = 0;
    for attempt in 0..20 {
        let _ = std::fs::remove_file(&path);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["save_loop_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for one complete checkpoint and for the next save to be under way.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !(path.exists() && tmp.exists()) {
            assert!(Instant::now() < deadline, "the child never saved");
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(attempt * 500));
        child.kill().unwrap();
        child.wait().unwrap();
        if tmp.exists() {
            mid_save_kills += 1;
        }
        // Whatever the moment, the checkpoint is complete and loads.
        let t = checkpoint::resume(&path, &c).unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        assert!(t.step >= 1);
        if mid_save_kills >= 3 {
            break;
        }
    }
    assert!(mid_save_kills >= 3, "only {mid_save_kills} kills landed during a save");
    assert!(Path::new(&path).exists());
}
