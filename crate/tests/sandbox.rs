//! The native Python sandbox: the official outputs, limits and recovery. Hostile code against
//! the kernel's isolation is in `hostile_code.rs`; the tests marked *unsandboxed* check the
//! best effort that runs only on the user's explicit `--allow-unsandboxed-code`.

use genprm::exec::native::{Isolation, PythonSandbox, SandboxConfig};
use genprm::exec::{CodeExecutor, ExecOutcome};
use genprm::generate::block_on;

fn sandbox() -> PythonSandbox {
    PythonSandbox::new(SandboxConfig::default()).expect("python3 must be installed for the sandbox tests")
}

/// The explicit opt-out: resource limits and an audit hook, no kernel isolation.
fn unsandboxed() -> PythonSandbox {
    PythonSandbox::new(SandboxConfig { isolation: Isolation::Unsandboxed, ..SandboxConfig::default() }).expect("python3")
}

fn run(sb: &mut PythonSandbox, code: &str) -> String {
    block_on(sb.run(code)).official_text()
}

#[test]
fn runs_code_and_keeps_the_namespace() {
    let mut sb = sandbox();
    assert_eq!(run(&mut sb, "n = 100\njo = n * (n + 1) // 2\nprint(jo)  # 5050"), "5050");
    assert_eq!(run(&mut sb, "print(jo + 1)"), "5051");
    assert_eq!(run(&mut sb, "x = 1"), "");
    assert_eq!(run(&mut sb, "print('  padded  \\n\\n')"), "padded");
    assert_eq!(run(&mut sb, "print(1/0)"), "Code execute Error: ZeroDivisionError: division by zero");
    let e = run(&mut sb, "print('unterminated)");
    assert!(e.starts_with("Code execute Error: SyntaxError: unterminated string literal"), "{e}");
    assert_eq!(run(&mut sb, "raise TimeoutError('custom')"), "Code execute time out: custom");
    // Partial output before an exception is dropped, as in the official executor.
    assert_eq!(run(&mut sb, "print('partial')\nraise ValueError('bad')"), "Code execute Error: ValueError: bad");
    block_on(sb.reset());
    assert!(run(&mut sb, "print(jo)").starts_with("Code execute Error: NameError"), "reset clears the namespace");
}

#[test]
fn sympy_is_available() {
    let mut sb = sandbox();
    assert_eq!(run(&mut sb, "import sympy as sp\nprint(sp.sqrt(8))"), "2*sqrt(2)");
    assert_eq!(run(&mut sb, "from sympy import symbols, solve\nx = symbols('x')\nprint(solve(x**2 - 4, x))"), "[-2, 2]");
}

#[test]
fn infinite_loop_times_out_and_the_next_run_works() {
    let mut sb = sandbox();
    run(&mut sb, "kept = 7");
    assert_eq!(run(&mut sb, "while True:\n    pass"), "Code execute time out: Code execution timed out");
    // The in-process alarm stopped it: the namespace survives, as in the official executor.
    assert_eq!(run(&mut sb, "print(kept)"), "7");
    // Code that swallows the alarm is killed from outside; a fresh interpreter takes over.
    let stubborn = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass";
    assert_eq!(run(&mut sb, stubborn), "Code execute time out: Code execution timed out");
    assert_eq!(run(&mut sb, "print(6 * 7)"), "42");
}

#[test]
fn unsandboxed_processes_are_refused_by_the_hook() {
    let mut sb = unsandboxed();
    let marker = std::env::temp_dir().join(format!("genprm-sandbox-escape-{}", std::process::id()));
    let m = marker.display();
    for code in [
        "import os\nwhile True:\n    os.fork()".to_string(),
        format!("import os\nos.system('touch {m}')"),
        format!("import subprocess\nsubprocess.run(['touch', '{m}'])"),
        "import multiprocessing\np = multiprocessing.Process(target=print)\np.start()".to_string(),
        format!("import ctypes\nctypes.CDLL(None).system(b'touch {m}')"),
    ] {
        let out = run(&mut sb, &code);
        assert!(out.starts_with("Code execute Error: PermissionError:"), "{code}\n-> {out}");
    }
    assert!(!marker.exists(), "a process escaped the sandbox");
    assert_eq!(run(&mut sb, "print('still alive')"), "still alive");
}

#[test]
fn memory_is_limited() {
    let mut sb = sandbox();
    assert_eq!(run(&mut sb, "x = bytearray(10 * 1024**3)"), "Code execute Error: MemoryError: ");
    assert_eq!(run(&mut sb, "print(len(bytearray(10**6)))"), "1000000");
}

#[test]
fn unsandboxed_writes_outside_scratch_are_refused_by_the_hook() {
    let mut sb = unsandboxed();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let v = victim.display();
    let o = outside.path().display();
    for code in [
        format!("open('{v}', 'w').write('pwned')"),
        format!("open('{v}', 'a').write('pwned')"),
        format!("import os\nos.remove('{v}')"),
        format!("import os\nos.rename('{v}', '{v}.moved')"),
        format!("import shutil\nshutil.rmtree('{o}')"),
        format!("import os\nfd = os.open('{o}/new.txt', os.O_WRONLY | os.O_CREAT)"),
        format!("import pathlib\npathlib.Path('{o}/new2.txt').write_text('x')"),
        "import os\nos.chdir('/')".to_string(),
    ] {
        let out = run(&mut sb, &code);
        assert!(out.starts_with("Code execute Error: PermissionError:"), "{code}\n-> {out}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(!outside.path().join("new.txt").exists() && !outside.path().join("new2.txt").exists());
    // Inside the scratch directory, files work.
    assert_eq!(run(&mut sb, "open('notes.txt', 'w').write('hi')\nprint(open('notes.txt').read())"), "hi");
    // Reading is allowed (imports need it).
    assert_eq!(run(&mut sb, &format!("print(open('{v}').read())")), "keep me");
}

#[test]
fn unsandboxed_network_is_refused_by_the_hook() {
    let mut sb = unsandboxed();
    for code in [
        "import socket\ns = socket.socket()",
        "import socket\nsocket.create_connection(('127.0.0.1', 80), timeout=1)",
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/', timeout=1)",
    ] {
        let out = run(&mut sb, code);
        assert!(out.starts_with("Code execute Error:"), "{code}\n-> {out}");
        assert!(out.contains("not allowed in the sandbox"), "{code}\n-> {out}");
    }
}

#[test]
fn exit_and_protocol_tampering_are_survived() {
    let mut sb = sandbox();
    assert_eq!(run(&mut sb, "exit(3)"), "Code execute Error: SystemExit: 3");
    assert_eq!(run(&mut sb, "import sys\nsys.exit()"), "Code execute Error: SystemExit: ");
    assert_eq!(run(&mut sb, "print(input())"), "Code execute Error: EOFError: EOF when reading a line");
    assert_eq!(run(&mut sb, "print('ok')"), "ok");
    // A crash of the interpreter itself is reported and the next run starts a new one.
    let out = block_on(sb.run("import os\nos._exit(1)"));
    assert!(matches!(out, ExecOutcome::Error { .. }), "{out:?}");
    assert_eq!(run(&mut sb, "print('back')"), "back");
}
