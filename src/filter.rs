//! The loaded filter config ([`FilterConfig`]) and the per-stream driver ([`StreamFilter`]) that
//! turns Envoy's stream hooks into proxy-wasm callbacks on the tenant's guest.
//!
//! Fail-open / fail-closed is decided here and only here: unknown tenants per `unknown_tenant`,
//! guest failures per `on_error`.

use crate::artifact::signature::TrustedKey;
use crate::artifact::VerifiedArtifact;
use crate::config::{Config, Policy, TenantId, TenantSource};
use crate::engine;
use crate::log_at;
use crate::pool;
use crate::proxy_wasm::{Action, Effect, GuestError, GuestInstance, Plugin};
use crate::stream::{HeaderKind, HttpStream, LocalReply};
use std::collections::HashMap;
use std::sync::Arc;

/// A filter config, loaded: every tenant's artifact verified, loaded, linked, and its init run once.
pub struct FilterConfig {
    pub name: String,
    pub tenants: HashMap<TenantId, Arc<Plugin>>,
    pub tenant_from: TenantSource,
    pub unknown_tenant: Policy,
    pub on_error: Policy,
}

impl FilterConfig {
    /// Parses and loads a `filter_config` JSON document. The error names the field or the tenant,
    /// the file and the reason.
    pub fn load_json(name: &str, json: &[u8]) -> Result<FilterConfig, String> {
        let config = Config::parse(json).map_err(|e| e.to_string())?;
        FilterConfig::load(name, &config)
    }

    pub fn load(name: &str, config: &Config) -> Result<FilterConfig, String> {
        let engine = engine::runtime_engine()?;
        let keys = config
            .trusted_keys
            .iter()
            .map(|path| TrustedKey::load(path))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("invalid filter_config field `trusted_keys`: {e}"))?;
        let mut tenants = HashMap::with_capacity(config.tenants.len());
        for tenant in &config.tenants {
            let refuse = |reason: String| format!("tenant `{}`: artifact refused: {reason}", tenant.id);
            let artifact = VerifiedArtifact::read(&tenant.module, &tenant.signature, &keys).map_err(|e| refuse(e.to_string()))?;
            let (module, jit) = artifact.load(engine, config.allow_jit).map_err(|e| refuse(e.to_string()))?;
            if jit {
                log_at!(Warn, "thaw: tenant `{}`: {} is plain Wasm, JIT-compiled at config load (allow_jit)", tenant.id, tenant.module.display());
            }
            let plugin = Plugin::new(engine, tenant, module, artifact.digest())
                .map_err(|e| refuse(format!("{}: {e}", tenant.module.display())))?;
            // Run the guest's init once now, so a guest that rejects its configuration rejects the
            // config at load, not at the first request.
            let instance = plugin.instantiate().map_err(|e| e.to_string())?;
            let plugin = Arc::new(plugin);
            log_at!(
                Info,
                "thaw: tenant `{}`: loaded {} ({}, signature verified)",
                tenant.id,
                tenant.module.display(),
                plugin.digest
            );
            drop(instance);
            tenants.insert(tenant.id.clone(), plugin);
        }
        Ok(FilterConfig {
            name: name.to_string(),
            tenants,
            tenant_from: config.tenant_from.clone(),
            unknown_tenant: config.unknown_tenant,
            on_error: config.on_error,
        })
    }
}

/// What Envoy should do with the stream after a headers hook.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    Continue,
    Stop,
}

struct ActiveGuest {
    plugin: Arc<Plugin>,
    instance: GuestInstance,
    context: u32,
}

/// The state of one HTTP stream.
pub struct StreamFilter {
    config: Arc<FilterConfig>,
    active: Option<ActiveGuest>,
    /// A local reply was sent: the guest sees nothing of the response.
    replied: bool,
}

impl StreamFilter {
    pub fn new(config: Arc<FilterConfig>) -> StreamFilter {
        StreamFilter { config, active: None, replied: false }
    }

    fn resolve_tenant<S: HttpStream>(&self, stream: &S) -> Option<Arc<Plugin>> {
        let tenant = match &self.config.tenant_from {
            TenantSource::Header(name) => {
                let value = stream.header_values(HeaderKind::RequestHeaders, name.as_bytes())?.into_iter().next()?;
                TenantId::try_from(std::str::from_utf8(&value).ok()?).ok()?
            }
            TenantSource::Route => stream.route_tenant()?,
        };
        self.config.tenants.get(&tenant).cloned()
    }

    fn reply<S: HttpStream>(&mut self, stream: &mut S, reply: &LocalReply) -> Verdict {
        self.replied = true;
        stream.send_local_reply(reply);
        Verdict::Stop
    }

    /// A guest failed: drop its instance (never reused) and answer per `on_error`.
    fn guest_failed<S: HttpStream>(&mut self, stream: &mut S, error: &GuestError) -> Verdict {
        log_at!(Error, "thaw: {error}");
        self.active = None;
        match self.config.on_error {
            Policy::Allow => Verdict::Continue,
            Policy::Deny => self.reply(
                stream,
                &LocalReply::text(503, "thaw: the tenant's filter failed; request denied\n", "thaw_guest_failure"),
            ),
        }
    }

    /// Performs what the guest asked for during its call; Stop when it sent a local reply.
    fn apply_effects<S: HttpStream>(&mut self, stream: &mut S, effects: Vec<Effect>) -> Option<Verdict> {
        let mut verdict = None;
        for effect in effects {
            match effect {
                Effect::LocalReply(reply) if !self.replied => verdict = Some(self.reply(stream, &reply)),
                Effect::LocalReply(_) => {}
            }
        }
        verdict
    }

    pub fn on_request_headers<S: HttpStream + Clone + 'static>(&mut self, mut stream: S, end_of_stream: bool) -> Verdict {
        let Some(plugin) = self.resolve_tenant(&stream) else {
            return match self.config.unknown_tenant {
                Policy::Allow => Verdict::Continue,
                Policy::Deny => self.reply(&mut stream, &LocalReply::text(403, "thaw: unknown tenant\n", "thaw_unknown_tenant")),
            };
        };
        let started = pool::take(&plugin).and_then(|mut instance| {
            let context = instance.create_http_context()?;
            Ok(ActiveGuest { plugin, instance, context })
        });
        let active = match started {
            Ok(active) => self.active.insert(active),
            Err(e) => return self.guest_failed(&mut stream, &e),
        };
        let num_headers = stream.header_count(HeaderKind::RequestHeaders);
        let result = active.instance.on_request_headers(Box::new(stream.clone()), active.context, num_headers, end_of_stream);
        let effects = active.instance.take_effects();
        match result {
            Err(e) => self.guest_failed(&mut stream, &e),
            Ok(action) => self.apply_effects(&mut stream, effects).unwrap_or(match action {
                Action::Continue => Verdict::Continue,
                Action::Pause => Verdict::Stop,
            }),
        }
    }

    pub fn on_response_headers<S: HttpStream + Clone + 'static>(&mut self, mut stream: S, end_of_stream: bool) -> Verdict {
        if self.replied {
            return Verdict::Continue;
        }
        let Some(active) = self.active.as_mut() else { return Verdict::Continue };
        let num_headers = stream.header_count(HeaderKind::ResponseHeaders);
        let result = active.instance.on_response_headers(Box::new(stream.clone()), active.context, num_headers, end_of_stream);
        let effects = active.instance.take_effects();
        match result {
            Err(e) => self.guest_failed(&mut stream, &e),
            Ok(action) => self.apply_effects(&mut stream, effects).unwrap_or(match action {
                Action::Continue => Verdict::Continue,
                Action::Pause => Verdict::Stop,
            }),
        }
    }

    /// The stream is done: end the guest's context and return its instance to the pool.
    pub fn on_stream_complete<S: HttpStream + Clone + 'static>(&mut self, stream: S) {
        self.finish(Some(Box::new(stream)));
    }

    /// Envoy destroys the stream; ends the guest context if `on_stream_complete` did not run.
    pub fn on_destroy(mut self) {
        self.finish(None);
    }

    fn finish(&mut self, stream: Option<Box<dyn HttpStream>>) {
        let Some(mut active) = self.active.take() else { return };
        match active.instance.finish_http_context(stream, active.context) {
            Ok(()) => pool::give_back(&active.plugin, active.instance),
            Err(e) => log_at!(Error, "thaw: {e}"),
        }
    }
}
