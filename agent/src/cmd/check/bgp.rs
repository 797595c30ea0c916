//! `margay check` when routes between hosts go through BGP
//! (`inter_host_routes = bgp`): BIRD must be installed and its control
//! socket must answer (margay reloads BIRD and reads its sessions there).

use std::path::Path;

use margay_dataplane::bird::control::{BirdControl, BirdError};

use crate::preflight::{find_tool, CheckResult};

/// The BGP checks for BIRD's control socket `socket`.
pub async fn gather(socket: &Path) -> Vec<CheckResult> {
    let bird = find_tool("bird");
    let installed = super::check_tool(
        "bird",
        bird.as_deref(),
        "install BIRD 2 (Debian: apt-get install bird2); inter_host_routes = bgp needs it",
    );
    let sessions = match BirdControl::connect(socket).await {
        Ok(mut control) => control.bgp_sessions().await.map(|s| s.len()),
        Err(e) => Err(e),
    };
    vec![installed, check_bird_socket(socket, &sessions)]
}

/// BIRD's control socket answers `show protocols all` (`Ok(n)`: n BGP
/// sessions configured).
pub fn check_bird_socket(socket: &Path, sessions: &Result<usize, BirdError>) -> CheckResult {
    const NAME: &str = "BIRD control socket";
    let path = socket.display();
    match sessions {
        Ok(n) => CheckResult::ok(NAME, format!("{path}, {n} BGP sessions configured")),
        Err(e) if e.is_not_running() => CheckResult::problem(
            NAME,
            format!("{path}: nothing listens (BIRD not running?)"),
            "start BIRD (systemctl start bird) with `-c` on margay's bird_config file, \
             or point bird_socket (--bird-socket) at its socket",
        ),
        Err(e) => CheckResult::problem(
            NAME,
            e.to_string(),
            "check that margay can use the socket (BIRD's -s option, its owner and mode)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_tests::bird::{require_bird, BirdDir, TestBird};
    use margay_tests::netns::{require_root, TestNetns};

    #[test]
    fn socket_verdicts() {
        let socket = Path::new("/run/bird/bird.ctl");
        let ok = check_bird_socket(socket, &Ok(3));
        assert!(ok.ok && ok.detail.contains("3 BGP sessions"), "{ok}");
        let down = check_bird_socket(
            socket,
            &Err(BirdError::NotRunning {
                path: socket.into(),
            }),
        );
        assert!(
            !down.ok && down.detail.contains("BIRD not running"),
            "{down}"
        );
        assert!(down.hint.contains("--bird-socket"), "{down}");
    }

    #[tokio::test]
    async fn a_running_bird_passes_and_a_stopped_one_is_a_problem() {
        let test = "a_running_bird_passes_and_a_stopped_one_is_a_problem";
        if !(require_root(test) && require_bird(test)) {
            return;
        }
        let ns = TestNetns::new("chk-bird");
        let dir = BirdDir::new("check");
        dir.write_config("router id 10.9.9.9;\nprotocol device {}\n");
        let mut bird = TestBird::start(&ns, &dir);
        let results = gather(&dir.socket()).await;
        assert!(results.iter().all(|r| r.ok), "{results:?}");
        bird.stop();
        let results = gather(&dir.socket()).await;
        let socket = results.iter().find(|r| r.name == "BIRD control socket");
        assert!(socket.is_some_and(|r| !r.ok), "{results:?}");
    }
}
