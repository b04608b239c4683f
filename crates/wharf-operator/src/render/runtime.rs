//! How the container gets at wharf: `Bundled` (installed in the image) or `Injected` (copied from an
//! injector image by an init container into an emptyDir that is put on `PYTHONPATH`).

use k8s_openapi::api::core::v1::{Container, EnvVar, Volume, VolumeMount};

use super::Target;
use crate::crd::Runtime;

/// Mount point of the injected runtime in both the init and the app container.
pub const INJECT_DIR: &str = "/opt/wharf";
pub const INJECT_VOLUME: &str = "wharf-runtime";
/// Prefix of the termination message written when the app image's Python cannot load the injected
/// runtime; status computation looks for it to report `Degraded/RuntimeUnsupported`.
pub const UNSUPPORTED_PREFIX: &str = "RuntimeUnsupported:";
/// Name given to a user's own `PYTHONPATH` defined with `valueFrom`, so the injected directory can be
/// prepended through `$(VAR)` expansion.
pub const USER_PYTHONPATH: &str = "WHARF_USER_PYTHONPATH";

/// Checks that the injected extension imports under the image's Python before starting wharf, and
/// leaves a one-line reason in the termination log otherwise (the init container cannot know which
/// Python the app image has). `$0` is "wharf" and `$@` are wharf's arguments.
const INJECTED_LAUNCHER: &str = r#"if ! err=$(python -c 'import wharf._wharf' 2>&1); then
  msg="RuntimeUnsupported: the injected wharf runtime cannot be loaded by this image's Python ($(python -V 2>&1)): $(printf '%s' "$err" | tail -n 1)"
  printf '%s\n' "$msg" > /dev/termination-log
  printf '%s\n' "$msg" >&2
  exit 3
fi
exec python -m wharf "$@""#;

/// `command` and `args` of the app container.
pub fn command(runtime: Runtime, wharf_args: Vec<String>) -> (Vec<String>, Vec<String>) {
    match runtime {
        Runtime::Bundled => (vec!["wharf".to_owned()], wharf_args),
        Runtime::Injected => (
            vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                INJECTED_LAUNCHER.to_owned(),
                "wharf".to_owned(),
            ],
            wharf_args,
        ),
    }
}

/// The init container that copies `/wharf` of the injector image into the shared volume.
pub fn init_container(t: &Target, image: &str, template: &Container) -> Container {
    Container {
        name: INJECT_VOLUME.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: template.image_pull_policy.clone(),
        command: Some(vec![
            "cp".to_owned(),
            "-a".to_owned(),
            "/wharf/.".to_owned(),
            format!("{INJECT_DIR}/"),
        ]),
        // Same requests as the app container: the pod's effective request is the max anyway, and
        // namespaces with quotas demand requests on every container.
        resources: t.app.spec.resources.clone(),
        security_context: template.security_context.clone(),
        volume_mounts: Some(vec![VolumeMount {
            name: INJECT_VOLUME.to_owned(),
            mount_path: INJECT_DIR.to_owned(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

pub fn volume() -> Volume {
    Volume {
        name: INJECT_VOLUME.to_owned(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    }
}

pub fn app_mount() -> VolumeMount {
    VolumeMount {
        name: INJECT_VOLUME.to_owned(),
        mount_path: INJECT_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Rewrites the user's env so `PYTHONPATH` starts with the injected runtime, keeping whatever the
/// user put there after it.
pub fn with_injected_pythonpath(mut env: Vec<EnvVar>) -> Vec<EnvVar> {
    let Some(pos) = env.iter().position(|e| e.name == "PYTHONPATH") else {
        env.push(EnvVar {
            name: "PYTHONPATH".to_owned(),
            value: Some(INJECT_DIR.to_owned()),
            value_from: None,
        });
        return env;
    };
    let user = env.remove(pos);
    match (user.value, user.value_from) {
        (_, Some(value_from)) => {
            env.insert(
                pos,
                EnvVar {
                    name: USER_PYTHONPATH.to_owned(),
                    value: None,
                    value_from: Some(value_from),
                },
            );
            env.insert(
                pos + 1,
                EnvVar {
                    name: "PYTHONPATH".to_owned(),
                    value: Some(format!("{INJECT_DIR}:$({USER_PYTHONPATH})")),
                    value_from: None,
                },
            );
        }
        (Some(value), None) if !value.is_empty() => env.insert(
            pos,
            EnvVar {
                name: "PYTHONPATH".to_owned(),
                value: Some(format!("{INJECT_DIR}:{value}")),
                value_from: None,
            },
        ),
        _ => env.insert(
            pos,
            EnvVar {
                name: "PYTHONPATH".to_owned(),
                value: Some(INJECT_DIR.to_owned()),
                value_from: None,
            },
        ),
    }
    env
}
