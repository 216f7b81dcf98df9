"""The web demo's page (Gradio): upload, vocabulary, γ, overlay, legend, class map, downloads.

Offline by construction: Gradio's analytics and version check are off, the theme uses the
system's fonts, and the server serves its own assets. A session's state is only the id of its
last run (kept by :class:`~chimeraseg.demo.session.WebDemo`, bounded); requests run through
Gradio's queue at most ``Limits.concurrency`` at a time. Gradio's own copies of uploads and
results go into the demo's folder (removed on close) and are deleted after
``Limits.cache_minutes``; the server serves only that folder (the examples are copied into it).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import gradio as gr  # noqa: E402

from chimeraseg.demo.session import InputError, WebDemo  # noqa: E402

__all__ = ["GAMMA_RANGE", "build_app", "launch"]

GAMMA_RANGE = (-2.0, 5.0)  # slider bounds; logits are cosines / 0.07, so γ of a few units matters
SYSTEM_FONTS = ["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "Menlo", "Consolas", "monospace"]


def _warn(message: str) -> str:
    return f"**⚠ {message}**"


def build_app(demo: WebDemo, examples: list[str]) -> gr.Blocks:
    """The page; its two API endpoints are ``/segment`` and ``/class_map``.

    Points Gradio's cache at the demo's folder (:meth:`WebDemo.claim_gradio_cache`).

    Args:
        demo: The shared logic with its loaded model source.
        examples: Example image files (synthetic validation images); copies are served.
    """
    demo.claim_gradio_cache()  # before the components are made
    examples = demo.publish_examples(examples)
    source, limits = demo.source, demo.limits
    unseen = ", ".join(source.default_vocabulary[i] for i in source.default_unseen)

    def segment(path, vocabulary, unseen_names, gamma):  # noqa: ANN001, ANN202 -- Gradio values
        try:
            r = demo.segment(path, vocabulary, unseen_names, gamma)
        except InputError as e:
            return None, "", None, None, _warn(str(e)), None, gr.update(choices=[], value=None)
        choice = gr.update(choices=r.names, value=r.default_class())
        files = (r.label_png, r.vocabulary_json)
        return r.overlay, r.legend, *files, r.message, r.run_id, choice

    def class_map(run_id: str | None, name: str | None):  # noqa: ANN202
        try:
            image, message = demo.class_map(demo.kept(run_id), name)
        except InputError as e:
            return None, _warn(str(e))
        return image, message

    def first_map(run_id: str | None, name: str | None):  # noqa: ANN202
        return (None, "") if not run_id else class_map(run_id, name)  # after a failed run

    cache = (60, 60 * limits.cache_minutes)  # (check every minute, delete files older than)
    with gr.Blocks(title="ChimeraSeg web demo", analytics_enabled=False, delete_cache=cache) as app:
        state = gr.State(None, time_to_live=60 * limits.session_minutes)  # last run's id
        gr.Markdown(
            "## ChimeraSeg: zero-shot segmentation with your own words\n"
            f"Model: {source.description}. Images with a side above {limits.max_side} px are "
            f"downscaled; at most {limits.max_classes} classes and {limits.max_names} names "
            f"(synonyms included); uploads up to {limits.max_upload_mb} MB."
        )
        with gr.Row():
            with gr.Column():
                image = gr.File(
                    label="Image", file_types=["image"], type="filepath", elem_id="cs-image"
                )
                if examples:
                    gr.Examples([[p] for p in examples], inputs=[image], label="Examples")
                vocabulary = gr.Textbox(
                    label="Vocabulary: one class per line; 'sofa, couch' = one class, synonyms",
                    value="\n".join(source.default_vocabulary),
                    lines=8,
                    elem_id="cs-vocabulary",
                )
                unseen_box = gr.Textbox(
                    label="Unseen classes (comma-separated names of the vocabulary; they get γ)",
                    value=unseen,
                    elem_id="cs-unseen",
                )
                gamma = gr.Slider(
                    *GAMMA_RANGE,
                    value=source.default_gamma,
                    step=0.05,
                    label="γ: added to the unseen classes' logits (the evaluator's rule)",
                    elem_id="cs-gamma",
                )
                run = gr.Button("Segment", variant="primary", elem_id="cs-run")
            with gr.Column():
                message = gr.Markdown(elem_id="cs-message")
                overlay = gr.Image(
                    label="Overlay", type="numpy", format="png", interactive=False,
                    elem_id="cs-overlay",
                )  # fmt: skip
                legend = gr.HTML(elem_id="cs-legend-box")
                chosen = gr.Dropdown(  # custom values reach class_map, which names the problem
                    label="Similarity map (Fig. 8) of class", choices=[], allow_custom_value=True,
                    elem_id="cs-class",
                )  # fmt: skip
                similarity = gr.Image(
                    label="CLS-to-feature similarity", type="numpy", format="png",
                    interactive=False, elem_id="cs-similarity",
                )  # fmt: skip
                similarity_message = gr.Markdown(elem_id="cs-similarity-message")
                labels_png = gr.File(label="Label PNG (class index per pixel)", elem_id="cs-png")
                vocabulary_json = gr.File(label="vocabulary.json", elem_id="cs-json")
        outputs = [overlay, legend, labels_png, vocabulary_json, message, state, chosen]
        event = run.click(
            segment, [image, vocabulary, unseen_box, gamma], outputs, api_name="segment"
        )
        map_io = ([state, chosen], [similarity, similarity_message])
        event.then(first_map, *map_io, api_name=False)
        chosen.input(class_map, *map_io, api_name="class_map")
    app.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue_size)
    return app


def launch(app: gr.Blocks, demo: WebDemo, host: str, port: int, block: bool = True) -> gr.Blocks:
    """Serves the page on ``host:port`` (no share link, no server-side rendering, no MCP).

    Only the demo's folder is served (its runs' files, the published examples, Gradio's
    copies); Gradio keeps the state of at most ``Limits.sessions`` sessions.

    Args:
        app: From :func:`build_app`.
        demo: Its logic (every file it serves lives in ``demo.output_dir``).
        host: Interface to bind (127.0.0.1 keeps it on this machine).
        port: TCP port.
        block: Serve until interrupted; False returns at once (tests).
    """
    theme = gr.themes.Base(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        theme=theme,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        max_file_size=f"{demo.limits.max_upload_mb}mb",
        allowed_paths=[demo.output_dir],
        state_session_capacity=demo.limits.sessions,
        prevent_thread_lock=not block,
        show_error=True,
        quiet=not block,
    )
    return app
