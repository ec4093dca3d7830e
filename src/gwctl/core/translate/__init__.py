"""Pure translation between the Anthropic Messages API and the OpenAI Chat Completions API.

Requests (:mod:`.requests`), whole responses and error bodies (:mod:`.responses`) and streams
(:mod:`.streams`); no I/O here, so the proxy decides when to translate and the rules are tested
without a server.
"""

from gwctl.core.translate.common import EFFORT_TO_BUDGET, Translated, TranslationError, budget_to_effort
from gwctl.core.translate.requests import TOOL_ERROR_MARKER, anthropic_to_openai_request, openai_to_anthropic_request
from gwctl.core.translate.responses import (
    anthropic_error_to_openai,
    anthropic_to_openai_response,
    gateway_error_to_anthropic,
    openai_error_to_anthropic,
    openai_to_anthropic_response,
)
from gwctl.core.translate.streams import DONE, AnthropicToOpenAIStream, OpenAIToAnthropicStream

__all__ = [
    "DONE",
    "EFFORT_TO_BUDGET",
    "TOOL_ERROR_MARKER",
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "Translated",
    "TranslationError",
    "anthropic_error_to_openai",
    "anthropic_to_openai_request",
    "anthropic_to_openai_response",
    "budget_to_effort",
    "gateway_error_to_anthropic",
    "openai_error_to_anthropic",
    "openai_to_anthropic_request",
    "openai_to_anthropic_response",
]
