//! A milter that accepts everything and does nothing else: the reference `integration/bench`
//! measures Postern's milter door against, so that its ratio to Postfix alone says what the
//! milter protocol itself costs and Postern's ratio to it says what Postern adds.
//!
//! It negotiates as Postern's milter door does (src/milter/) for a policy that may refuse at
//! every stage ([`Attention::EVERYTHING`]): the same actions, protocol options and no-reply
//! stages ([`postern::milter::requested_options`]), the same macros ([`postern::milter::MACROS`]),
//! callbacks for the same stages; Postern itself asks the MTA to wait only where its policy
//! may refuse. It listens through the same listener on a single-threaded runtime, as
//! `postern milter` does.
//!
//!     cargo run --release --example noop-milter -- unix:/path/to/socket [MODE]
//!
//! MODE is the unix socket's octal mode (default 0666). Stops on SIGTERM or SIGINT.

use std::ffi::CString;
use std::process::ExitCode;

use indymilter::{Callbacks, NegotiateContext, ProtoOpts, Status};
use postern::engine::attention::Attention;
use postern::milter::socket::{ListenSocket, MilterListener};
use postern::milter::{ACTIONS, MACROS, NOREPLY_STAGES, requested_options};
use tokio::signal::unix::{SignalKind, signal};

/// The stages at which the MTA waits for no answer on this connection.
struct Conn {
    noreply: ProtoOpts,
}

/// `Continue`, or nothing when the MTA waits for no answer at this stage (as Postern answers).
fn pass(data: &Option<Conn>, stage: ProtoOpts) -> Status {
    match data {
        Some(conn) if conn.noreply.contains(stage) => Status::Noreply,
        _ => Status::Continue,
    }
}

async fn negotiate(
    cx: &mut NegotiateContext<Conn>,
    actions: indymilter::Actions,
    opts: ProtoOpts,
) -> Status {
    cx.requested_actions &= actions;
    let requested = requested_options(opts, &Attention::EVERYTHING);
    cx.requested_opts |= requested;
    for (stage, names) in MACROS {
        cx.requested_macros
            .insert(*stage, CString::new(*names).expect("no NUL in macro list"));
    }
    cx.data = Some(Conn {
        noreply: requested & NOREPLY_STAGES,
    });
    Status::Continue
}

fn callbacks() -> Callbacks<Conn> {
    Callbacks::new()
        .on_negotiate(|cx, actions, opts| Box::pin(negotiate(cx, actions, opts)))
        .on_connect(|cx, _, _| Box::pin(async move { pass(&cx.data, ProtoOpts::NOREPLY_CONNECT) }))
        .on_helo(|_, _| Box::pin(async { Status::Continue }))
        .on_mail(|_, _| Box::pin(async { Status::Continue }))
        .on_rcpt(|_, _| Box::pin(async { Status::Continue }))
        .on_data(|_| Box::pin(async { Status::Continue }))
        .on_header(|cx, _, _| Box::pin(async move { pass(&cx.data, ProtoOpts::NOREPLY_HEADER) }))
        .on_eoh(|cx| Box::pin(async move { pass(&cx.data, ProtoOpts::NOREPLY_EOH) }))
        .on_body(|cx, _| Box::pin(async move { pass(&cx.data, ProtoOpts::NOREPLY_BODY) }))
        .on_eom(|_| Box::pin(async { Status::Continue }))
        .on_abort(|_| Box::pin(async { Status::Continue }))
        .on_close(|_| Box::pin(async { Status::Continue }))
        .on_unknown(|_, _| Box::pin(async { Status::Continue }))
}

async fn serve(listen: ListenSocket, mode: u32) -> Result<(), String> {
    let (listener, _stop) = MilterListener::bind(&listen, mode)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let config = indymilter::Config {
        actions: ACTIONS,
        ..Default::default()
    };
    indymilter::run(listener, callbacks(), config, shutdown)
        .await
        .map_err(|e| format!("milter stopped: {e}"))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let usage = "usage: noop-milter unix:/path | inet:HOST:PORT [MODE]";
    let Some(listen) = args.next().and_then(|s| s.parse::<ListenSocket>().ok()) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let Ok(mode) = u32::from_str_radix(args.next().as_deref().unwrap_or("0666"), 8) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("noop-milter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen, mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("noop-milter: {e}");
            ExitCode::FAILURE
        }
    }
}
