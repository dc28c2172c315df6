"""The steps a request takes from the door to the queue, written once for every way in
(a generation, an edit or a question; answered now or as an async job):

    admit (ready, key) → [decode uploads] → experiment arm → resolve (preset, defaults,
    limits) → content policy → [the edit's own checks] → the work to queue

Each method returns the :mod:`~flux_server.scheduling.work` to queue; what is known of
the request so far goes on its :class:`~flux_server.admission.gate.Trail` for the audit
line, whatever the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from flux_contract.names import normalize
from flux_server.admission.audit_lines import Trail
from flux_server.admission.gate import Admission
from flux_server.errors import NotEnabled
from flux_server.experiments.runtime import ExperimentRuntime
from flux_server.queue import uploads
from flux_server.requests.edit_inputs import decode_edit_inputs, sized_for
from flux_server.requests.edits import edit_job_from, validate
from flux_server.requests.images import decode_image
from flux_server.requests.params import GenerateParams, ResolvedRequest, resolve
from flux_server.requests.presets_store import PresetStore
from flux_server.requests.questions import validate_question
from flux_server.scheduling.runner import Runner
from flux_server.scheduling.work import Edit, Generation, Question
from flux_server.settings import ServerSettings


@dataclass(frozen=True)
class Prepared:
    """A generation ready to queue, and its result cache key (None: no cache)."""

    work: Generation
    cache_key: str | None


@dataclass(frozen=True)
class EditRequest:
    """An edit as the adapters receive it: the uploads still encoded."""

    image: bytes
    mask: bytes | None
    mode: str | None
    strength: float | None
    params: GenerateParams


@dataclass(eq=False)
class Intake:
    """Admission, experiments, resolution and the content policy, in one order."""

    settings: ServerSettings
    admission: Admission
    presets: PresetStore
    experiments: ExperimentRuntime
    runner: Runner

    async def generation(self, trail: Trail, params: GenerateParams) -> Prepared:
        """A generation: admitted, resolved, screened, with its cache key."""
        self.admission.admit(trail)
        request = await self._resolved(trail, params)
        key = self.admission.cache_key(
            request,
            seeded=params.seed is not None,
            adapter_versions=self.runner.adapter_versions,
        )
        work = Generation(
            request=request, output_format=request.output_format, request_id=trail.ctx.request_id
        )
        work.previews = params.previews
        return Prepared(work, key)

    async def edit(self, trail: Trail, edit: EditRequest) -> Edit:
        """An edit: admitted, its uploads decoded off the loop, sized, resolved at that
        size, screened, and checked against what the editor can do. With ``--queue`` the
        upload rides the entry, and the worker checks what needs its models."""
        self.admission.admit(trail)
        editor, s = self.runner.editor, self.settings
        if editor is None and s.queue is None:
            raise NotEnabled("editing is off: start the server with --enable-editing", "mode")
        if s.queue is not None:
            uploads.check_size(s.queue_max_upload_bytes, edit.image, edit.mask)
        source, mask = await decode_edit_inputs(
            self.runner.off_loop, edit.image, edit.mask, s.max_image_pixels
        )
        request = await self._resolved(trail, sized_for(edit.params, source.size, s.max_side))
        job = edit_job_from(
            request,
            image=source,
            mask=mask,
            mode=edit.mode,
            strength=edit.strength,
            width=edit.params.width,
            height=edit.params.height,
        )
        validate(job, kontext_available=editor is None or editor.can_instruct)
        work = Edit(job=job, output_format=request.output_format, request_id=trail.ctx.request_id)
        work.previews = edit.params.previews
        if s.queue is not None:
            entry = uploads.edit_entry(
                edit.image, edit.mask, edit.mode, edit.strength,
                edit.params.width, edit.params.height,
            )  # fmt: skip
            work.fleet_entry = {**entry, "job": request.model_dump(mode="json")}
        return work

    async def question(
        self, trail: Trail, *, image: bytes, question: str, max_tokens: int
    ) -> Question:
        """A question about an image: admitted, checked against the loaded model, its
        image decoded off the loop, screened."""
        self.admission.admit(trail)
        model, queue = self.runner.vqa_model, self.settings.queue
        if model is None and queue is None:
            raise NotEnabled("VQA is off: start the server with --vqa-model", "question")
        # With --queue the worker checks its model's own limits too.
        validate_question(question, max_tokens, model)
        if queue is not None:
            uploads.check_size(self.settings.queue_max_upload_bytes, image)
        decoded = await self.runner.off_loop(
            decode_image, image, "image", self.settings.max_image_pixels
        )
        await self.admission.screen(trail, question, "question")
        work = Question(
            image=decoded, question=question, max_tokens=max_tokens, request_id=trail.ctx.request_id
        )
        if queue is not None:
            work.fleet_entry = uploads.vqa_entry(image, question, max_tokens)
        return work

    async def _resolved(self, trail: Trail, params: GenerateParams) -> ResolvedRequest:
        """The experiment arm, then the request with its preset, the server's defaults and
        limits; then the content policy on its prompt."""
        params = self._arm(trail, params)
        request = trail.job = resolve(
            params,
            self.presets.get(),
            self.settings,
            self.runner.adapter_defaults,
            slot=self.runner.adapter_slot,
        )
        await self.admission.screen(trail, request.prompt, "prompt")
        return request

    def _arm(self, trail: Trail, params: GenerateParams) -> GenerateParams:
        """The requested preset in the form names are compared in (Unicode NFC); in an
        experiment on it, the arm's preset instead (the request's own fields still win,
        since they override any preset's)."""
        if params.style_preset is None:
            return params
        preset = normalize(params.style_preset)
        trail.experiment = self.experiments.assign(preset, trail.user, trail.ctx.headers)
        if trail.experiment is not None:
            preset = trail.experiment.preset
        return params.model_copy(update={"style_preset": preset})
