//! The plugin ABI across versions, typed options as the operator meets them,
//! and libraries mapped only when the configuration uses them.

use buildmaster_e2e::{fixture, run_cli, wait_until, Basedir};

fn install(base: &Basedir, fixture_name: &str, file: &str) {
    std::fs::create_dir_all(base.path().join("plugins")).unwrap();
    std::fs::copy(
        fixture(fixture_name),
        base.path().join("plugins").join(file),
    )
    .unwrap();
}

/// The plugin libraries the master process has mapped: its private copies.
fn mapped_plugins(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut copies: Vec<String> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.contains("/plugin-cache/"))
        .map(str::to_string)
        .collect();
    copies.sort();
    copies.dedup();
    copies
}

#[test]
fn a_plugin_built_for_abi_1_0_loads_and_serves() {
    let base = Basedir::new(
        "[master]\nplugin_dirs = [\"plugins\"]\n[www.change_hook_dialects]\nabi10 = true\n",
    );
    install(&base, "fixture_abi_1_0", "abi10.so");
    let master = base.start();
    let reply = master.post_form("/change_hook/abi10?who=ada", "");
    assert_eq!((reply.status, reply.body.as_str()), (200, "1 change found"));
    let change = &master.changes()[0];
    assert_eq!(change["comments"], "handled by a plugin built for ABI 1.0");
    assert_eq!(change["author"], "ada");
    let log = master.log();
    assert!(
        log.contains("plugin abi10 1.0.0 (plugin API 1.0, SDK before 1.1) loaded"),
        "{log}"
    );
}

#[test]
fn plugins_built_for_a_newer_abi_are_refused_naming_both_versions() {
    let base = Basedir::new(
        "[master]\nplugin_dirs = [\"plugins\", \"@builtin\"]\n[www.change_hook_dialects]\nbase = true\n",
    );
    install(&base, "fixture_newer_minor", "newer-minor.so");
    install(&base, "fixture_newer_major", "newer-major.so");
    let master = base.start();
    let log = master.log();
    let refused = |file: &str| {
        log.lines()
            .find(|l| l.contains(" refused: ") && l.contains(file))
            .unwrap_or_else(|| panic!("{file}: {log}"))
            .to_string()
    };
    assert!(
        refused("newer-minor.so").contains("built against plugin API 1.2, this master speaks 1.1"),
        "{log}"
    );
    assert!(
        refused("newer-major.so")
            .contains("built against plugin API 2.0.0, this master speaks 1.1"),
        "{log}"
    );
    assert_eq!(
        master.post_form("/change_hook/base", "comments=ok").status,
        200
    );
}

#[test]
fn only_the_libraries_the_configuration_uses_are_mapped() {
    let config = |dialects: &str| {
        format!(
            "[www]\nport = \"127.0.0.1:0\"\n[master]\nreload_on_change = false\n\
             [www.change_hook_dialects]\n{dialects}"
        )
    };
    let base = Basedir::with_file(&config("base = true\n"));
    let master = base.start();
    let mapped = mapped_plugins(master.pid());
    assert_eq!(mapped.len(), 1, "{mapped:?}");
    let log = master.log();
    assert!(log.contains("plugin base 0.1.0 (plugin API 1.1"), "{log}");
    assert!(
        log.contains("plugin github 0.1.0 available in ")
            && log.contains("(dialects: github; reporters: none); mapped when used"),
        "{log}"
    );

    // A reload that enables a dialect maps its library then.
    std::fs::write(
        master.basedir.path().join("master.toml"),
        config("base = true\ngithub = true\n"),
    )
    .unwrap();
    let output = run_cli(&["reconfig", master.basedir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let mapped = wait_until("the github library mapped", || {
        let mapped = mapped_plugins(master.pid());
        (mapped.len() == 2).then_some(mapped)
    });
    assert_eq!(mapped.len(), 2);
    let ping = master.send(
        "POST",
        "/change_hook/github",
        &[
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "ping"),
        ],
        b"{\"zen\": \"hi\"}",
    );
    assert_eq!(ping.status, 200, "{}", ping.body);
}

#[test]
fn option_errors_reach_checkconfig_with_the_table_location_and_key_path() {
    let base = Basedir::new(
        "[www.change_hook_dialects.github]\nsecret = 5\n\
         [www.change_hook_dialects.gitlab]\nsecrte = \"x\"\n",
    );
    let out = run_cli(&["checkconfig", base.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "master.toml:3:1: dialect 'github' (plugin github): options.secret: \
             expected a string or a list of strings, found an integer"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "master.toml:5:1: dialect 'gitlab' (plugin gitlab): options.secrte: \
             unknown option (known: secret, codebase)"
        ),
        "{stderr}"
    );
}
