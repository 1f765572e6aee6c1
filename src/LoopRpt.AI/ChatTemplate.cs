using LoopRpt.Tokenization;
using Microsoft.Extensions.AI;

namespace LoopRpt.AI;

/// <summary>Which prompt format <see cref="LoopRptChatClient"/> renders a conversation in.</summary>
public enum ChatTemplateKind
{
    /// <summary><see cref="ChatMl"/> when the tokenizer has <c>&lt;|im_start|&gt;</c> and <c>&lt;|im_end|&gt;</c> as single tokens (Ouro checkpoints), else <see cref="Plain"/>.</summary>
    Auto,

    /// <summary>
    /// ChatML, the format Ouro's chat checkpoints were tuned on:
    /// <c>&lt;|im_start|&gt;{role}\n{text}&lt;|im_end|&gt;\n</c> per message, then <c>&lt;|im_start|&gt;assistant\n</c>.
    /// Generation stops at <c>&lt;|im_end|&gt;</c> or the EOS id.
    /// </summary>
    ChatMl,

    /// <summary>
    /// A plain-text format for models trained here (no chat tokens): the BOS id if any, then per message
    /// <c>{Role}: {text}\n</c> (roles System, User, Assistant, Tool), then <c>Assistant:</c>. Generation stops at the EOS
    /// id or when the model starts the next turn (<c>\nUser:</c>, which is removed from the reply).
    /// </summary>
    Plain,
}

/// <summary>A rendered prompt: its token ids, the ids and strings that end the reply.</summary>
internal sealed record RenderedPrompt(long[] Ids, IReadOnlyList<long> StopTokens, IReadOnlyList<string> StopStrings);

/// <summary>Renders conversations in the formats of <see cref="ChatTemplateKind"/>.</summary>
internal static class ChatTemplate
{
    public const string ImStart = "<|im_start|>";
    public const string ImEnd = "<|im_end|>";
    public const string PlainNextTurn = "\nUser:";

    /// <summary>The concrete template for <paramref name="kind"/> with <paramref name="codec"/>.</summary>
    public static ChatTemplateKind Resolve(ChatTemplateKind kind, TextCodec codec)
    {
        if (kind != ChatTemplateKind.Auto) return kind;
        return codec.TokenToId(ImStart) is not null && codec.TokenToId(ImEnd) is not null ? ChatTemplateKind.ChatMl : ChatTemplateKind.Plain;
    }

    public static RenderedPrompt Render(IEnumerable<ChatMessage> messages, TextCodec codec, ChatTemplateKind kind)
    {
        var list = messages.ToList();
        if (list.Count == 0) throw new ArgumentException("At least one chat message is needed.", nameof(messages));
        var ids = new List<long>();
        var stopTokens = new List<long>();
        if (codec.EosTokenId is { } eos) stopTokens.Add(eos);
        switch (Resolve(kind, codec))
        {
            case ChatTemplateKind.ChatMl:
            {
                long start = codec.TokenToId(ImStart) ?? throw Missing(ImStart);
                long end = codec.TokenToId(ImEnd) ?? throw Missing(ImEnd);
                foreach (var m in list)
                {
                    ids.Add(start);
                    ids.AddRange(codec.Encode(m.Role.Value + "\n" + m.Text).Select(i => (long)i));
                    ids.Add(end);
                    ids.AddRange(codec.Encode("\n").Select(i => (long)i));
                }
                ids.Add(start);
                ids.AddRange(codec.Encode("assistant\n").Select(i => (long)i));
                stopTokens.Add(end);
                return new RenderedPrompt([.. ids], stopTokens, []);
            }
            default:
            {
                var text = string.Concat(list.Select(m => PlainRole(m.Role) + ": " + m.Text + "\n")) + "Assistant:";
                ids.AddRange(codec.EncodePrompt(text).Select(i => (long)i));
                return new RenderedPrompt([.. ids], stopTokens, [PlainNextTurn]);
            }
        }
    }

    private static string PlainRole(ChatRole role)
        => role == ChatRole.System ? "System" : role == ChatRole.Assistant ? "Assistant" : role == ChatRole.Tool ? "Tool" : "User";

    private static InvalidOperationException Missing(string token)
        => new($"The ChatML template needs '{token}' as one token, and the model's tokenizer has no such token; use ChatTemplateKind.Plain.");
}
