use super::*;

fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Drive `steps` ticks with the expert, rendering every tick; returns (frame hash, metrics).
fn drive(name: &str, seed: u64, steps: usize) -> (u64, EpisodeMetrics) {
    let mut w = World::new(name, seed).unwrap();
    let mut ctl = ExpertController::new();
    let mut r = Renderer::new(64, 36);
    let mut img = vec![0u8; 64 * 36 * 3];
    let mut h = 0u64;
    for _ in 0..steps {
        let p = w.expert_plan();
        let c = ctl.step(&p.waypoints, w.ego.speed);
        w.step(&c, DT);
        w.render(&mut r, &mut img);
        h = h.rotate_left(7) ^ hash(&img);
    }
    (h, w.metrics())
}

#[test]
fn unknown_scenario_lists_valid_names() {
    let e = World::new("nope", 1).err().unwrap().to_string();
    assert!(e.contains("lane_keep") && e.contains("nope"), "{e}");
}

#[test]
fn seed_ranges_are_disjoint() {
    const { assert!(TRAIN_SEEDS.end <= HELD_OUT_SEEDS.start) };
    assert!(scenario_names().len() >= 10);
}

#[test]
fn every_scenario_builds_and_steps() {
    for name in scenario_names() {
        let mut w = World::new(name, 3).unwrap();
        for _ in 0..5 {
            let p = w.expert_plan();
            assert!(p.waypoints.is_sane(200.0), "{name}");
            w.step(&Command::default(), DT);
        }
        let e = w.ego();
        assert!(e.target_points[0][0] > 0.0, "{name}: {:?}", e.target_points);
        let d = (e.target_points[0][0].powi(2) + e.target_points[0][1].powi(2)).sqrt();
        assert!((7.0..=50.5).contains(&d), "{name}: target point at {d} m");
    }
}

#[test]
fn same_seed_same_frames_and_score_different_seed_differs() {
    for name in ["red_light", "cut_in"] {
        let a = drive(name, HELD_OUT_SEEDS.start + 5, 60);
        let b = drive(name, HELD_OUT_SEEDS.start + 5, 60);
        assert_eq!(a.0, b.0, "{name}: frames differ for the same seed");
        assert_eq!(a.1, b.1, "{name}: metrics differ for the same seed");
        let c = drive(name, HELD_OUT_SEEDS.start + 6, 60);
        assert_ne!(a.0, c.0, "{name}: different seeds gave identical frames");
    }
    let m1 = run_expert_episode("stop_sign", 42).unwrap();
    let m2 = run_expert_episode("stop_sign", 42).unwrap();
    assert_eq!(m1, m2);
}

#[test]
fn expert_drives_held_out_subset_well() {
    let mut sum = 0.0;
    let mut n = 0.0;
    let mut worst = vec![];
    for name in scenario_names() {
        for seed in HELD_OUT_SEEDS.start..HELD_OUT_SEEDS.start + 2 {
            let m = run_expert_episode(name, seed).unwrap();
            if m.driving_score < 95.0 {
                worst.push(format!("{name}/{seed}: {:.1} {:?} {:?}", m.driving_score, m.termination, m.infractions));
            }
            sum += m.driving_score;
            n += 1.0;
        }
    }
    let mean = sum / n;
    assert!(mean >= 95.0, "expert mean DS {mean:.1}; low runs: {worst:#?}");
}

#[test]
fn idle_scores_near_zero_and_random_low() {
    let mut idle = 0.0;
    let mut random = 0.0;
    let names = scenario_names();
    for name in names {
        idle += eval::builtin_episode("idle", name, HELD_OUT_SEEDS.start).unwrap().driving_score;
        random += eval::builtin_episode("random", name, HELD_OUT_SEEDS.start).unwrap().driving_score;
    }
    let n = names.len() as f32;
    assert!(idle / n < 5.0, "idle DS {}", idle / n);
    assert!(random / n < 40.0, "random DS {}", random / n);
}

#[test]
fn render_fills_sky_and_ground() {
    let w = World::new("lane_keep", 7).unwrap();
    let mut r = Renderer::new(96, 54);
    let mut img = vec![0u8; 96 * 54 * 3];
    w.render(&mut r, &mut img);
    let top = &img[..3];
    let bottom = &img[(53 * 96 + 48) * 3..(53 * 96 + 48) * 3 + 3];
    assert_ne!(top, bottom);
    let distinct: std::collections::HashSet<[u8; 3]> = img.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
    assert!(distinct.len() > 20, "image looks flat: {} colours", distinct.len());
}

/// Pixels of the hazard lamps' amber (bright red, half green, no blue); the test's second render checks that nothing
/// else in its scene has that colour.
fn amber_pixels(img: &[u8]) -> usize {
    img.chunks(3).filter(|c| c[0] > 190 && (80..=170).contains(&c[1]) && c[2] < 70).count()
}

#[test]
fn parked_cars_show_hazard_lamps_and_queued_cars_do_not() {
    // drive the expert until the first parked car is 15-25 m ahead, the distance at which it must decide to go around
    let mut w = World::new("parked_obstacle", 1_000_001).unwrap();
    let mut ctl = ExpertController::new();
    let ahead = |w: &World| {
        w.actors
            .iter()
            .filter(|a| a.kind == ActorKind::Parked)
            .map(|a| geom::to_local(w.ego.pos, w.ego.yaw, a.pos)[0])
            .filter(|x| *x > 0.0)
            .fold(f32::INFINITY, f32::min)
    };
    for _ in 0..2000 {
        if ahead(&w) < 25.0 {
            break;
        }
        let p = w.expert_plan();
        let c = ctl.step(&p.waypoints, w.ego.speed);
        w.step(&c, DT);
    }
    assert!((15.0..25.0).contains(&ahead(&w)), "no parked car 15-25 m ahead: {}", ahead(&w));
    let mut r = Renderer::new(256, 128);
    let mut img = vec![0u8; 256 * 128 * 3];
    w.render(&mut r, &mut img);
    let parked = amber_pixels(&img);
    for a in w.actors.iter_mut().filter(|a| a.kind == ActorKind::Parked) {
        a.kind = ActorKind::Car;
    }
    w.render(&mut r, &mut img);
    let queued = amber_pixels(&img);
    assert!(parked >= 4 && queued == 0, "amber pixels: parked {parked}, same cars queued {queued}");
}

#[test]
fn expert_commentary_names_action_and_object() {
    let mut w = World::new("following", HELD_OUT_SEEDS.start).unwrap();
    let mut ctl = ExpertController::new();
    let mut saw_car = false;
    for _ in 0..200 {
        let out = w.expert();
        assert!(!out.commentary.is_empty() && out.qa.len() >= 3);
        if out.object == ObjectLabel::Car {
            saw_car = true;
            assert!(out.commentary.contains("car"), "{}", out.commentary);
        }
        let c = ctl.step(&out.waypoints, w.ego.speed);
        w.step(&c, DT);
    }
    assert!(saw_car);
}

#[test]
fn dataset_replay_and_eval_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let o = dataset::DatasetOptions {
        out: dir.path().join("ds"),
        frames: 12,
        seeds: 0..2,
        scenarios: vec!["following", "red_light"],
        width: 32,
        height: 18,
        every: 10,
        shard: 5,
        noise: 0.05,
        progress: false,
        policy: None,
    };
    let card = dataset::write_dataset(&o).unwrap();
    assert_eq!((card.frames, card.shards), (12, 3));
    let idx = std::fs::read_to_string(o.out.join("index.jsonl")).unwrap();
    assert_eq!(idx.lines().count(), 12);
    let first: serde_json::Value = serde_json::from_str(idx.lines().next().unwrap()).unwrap();
    for k in ["scenario", "seed", "speed", "target_points", "path", "speed_wps", "commentary", "action", "object", "qa"]
    {
        assert!(first.get(k).is_some(), "index record lacks {k}");
    }
    let shard0 = std::fs::metadata(o.out.join("images_0000.npy")).unwrap().len() as usize;
    assert_eq!(shard0, dataset::npy_header(&[5, 18, 32, 3]).len() + 5 * 18 * 32 * 3);
    assert!(o.out.join("DATA_CARD.md").exists() && o.out.join("data_card.json").exists());

    let html = dir.path().join("r.html");
    let m = replay::write_replay("stop_sign", 5, "expert", &html, 40, 32, 18).unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("const FR=") && page.contains("data:image/jpeg;base64,"));
    assert!(m.route_completion > 0.99);

    let mut run = |sc: &str, seed: u64| eval::builtin_episode("idle", sc, seed);
    let rep = eval::evaluate("idle", &["lane_keep"], 0..2, &mut run, None);
    let v = serde_json::to_value(&rep).unwrap();
    for k in ["driving_score", "route_completion", "success_rate", "infractions", "runs"] {
        assert!(v.get(k).is_some(), "report lacks {k}");
    }
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
    assert!(rep.table().contains("lane_keep"));
}

/// Long check (run with `cargo test --release -- --ignored expert_held_out_full --nocapture`): the expert on
/// 11 scenarios × 50 held-out seeds.
#[test]
#[ignore]
fn expert_held_out_full() {
    let mut run = |sc: &str, seed: u64| eval::builtin_episode("expert", sc, seed);
    let seeds = HELD_OUT_SEEDS.start..HELD_OUT_SEEDS.start + 50;
    let rep = eval::evaluate("expert", scenario_names(), seeds, &mut run, None);
    println!("{}", rep.table());
    assert!(rep.driving_score >= 95.0);
}

/// Render benchmark (run with `cargo test --release -- --ignored render_benchmark --nocapture`).
#[test]
#[ignore]
fn render_benchmark() {
    for (w, h) in [(256, 128), (512, 256)] {
        println!("render {w}x{h}: {:.0} frames/s", render::bench(w, h, 400));
    }
}

#[test]
fn ttc_sees_the_lead_car_only_when_closing_in() {
    let mut w = World::new("following", 3).unwrap();
    w.ego.speed = 0.0;
    assert!(w.ttc().is_infinite(), "standing still closes in on nothing: {}", w.ttc());
    // Much faster than any lead car: a finite, positive time to reach it.
    w.ego.speed = 30.0;
    let ttc = w.ttc();
    assert!((0.0..10.0).contains(&ttc), "{ttc}");
    // Twice the closing speed (roughly) halves it.
    w.ego.speed = 60.0;
    assert!(w.ttc() < ttc, "{} vs {ttc}", w.ttc());
}

#[test]
fn infractions_read_as_words() {
    assert_eq!(Infractions::default().describe(), "none");
    let i = Infractions { collision_vehicle: 1, red_light: 2, outside_lanes_m: 3.31, ..Default::default() };
    assert_eq!(i.describe(), "1 vehicle collision, 2 red lights run, 3.3 m outside the lanes");
}

/// `sim eval --jobs`: the same table whether the runs go one after another or several at a time.
#[test]
fn parallel_evaluation_gives_the_sequential_report() {
    let names = ["lane_keep", "following", "stop_sign"];
    let run = |sc: &str, seed: u64| eval::builtin_episode("blind", sc, seed);
    let in_turn = eval::evaluate("blind", &names, 3..5, &mut |sc: &str, seed: u64| run(sc, seed), None);
    let mut finished = 0;
    let parallel =
        eval::evaluate_parallel("blind", &names, 3..5, 4, &run, Some(&mut |_: &EpisodeMetrics| finished += 1));
    assert_eq!(finished, 6);
    let order: Vec<(String, u64)> = parallel.runs.iter().map(|r| (r.scenario.clone(), r.seed)).collect();
    let table: Vec<(String, u64)> =
        names.iter().flat_map(|sc| (3..5).map(move |seed| (sc.to_string(), seed))).collect();
    assert_eq!(order, table, "runs are reported in the table's order, not as they finished");
    assert_eq!(serde_json::to_value(&in_turn).unwrap(), serde_json::to_value(&parallel).unwrap());
}
