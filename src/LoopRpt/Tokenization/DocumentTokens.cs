namespace LoopRpt.Tokenization;

/// <summary>
/// The one rule for the start and end-of-text tokens around text, used by every face (library, CLI, hosting, server and
/// Microsoft.Extensions.AI clients, ML.NET) through <see cref="TextCodec"/> and <see cref="LoopRptTokenizer"/>:
/// <list type="number">
/// <item><description><b>Start id</b> (<see cref="StartId"/>): the tokenizer's BOS, else its end-of-text id. GPT-2-style
/// tokenizers — tiktoken gpt2, the trained byte-level BPE, <see cref="ByteTokenizer"/>, and Ouro's tokenizer.json, whose
/// config names <c>&lt;|endoftext|&gt;</c> = 0 as both bos and eos — have one id for both.</description></item>
/// <item><description><b>A prompt or scored document</b> is <c>[start] + ids</c> (<see cref="Prompt"/>): the text's first
/// token is predicted from the start token, so it is scored too. This is lm-evaluation-harness's rolling
/// log-likelihood (its prefix token is the end-of-text id) and GPT-2's unconditional sampling (a context of
/// <c>&lt;|endoftext|&gt;</c>).</description></item>
/// <item><description><b>Training text</b> is the documents joined as <c>[start] d1 [eos] [start] d2 [eos] ...</c>
/// (<see cref="Append"/>), where <c>[eos]</c> is written only when it differs from the start id: each document appears
/// exactly as a prompt is encoded, so training and inference see the same context, and the model learns to end a
/// document. With one shared id (GPT-2) this is <c>EOT d1 EOT d2</c>, the id ending one document and starting the next;
/// with distinct ids it is Llama's <c>BOS d EOS</c> per document.</description></item>
/// </list>
/// </summary>
public static class DocumentTokens
{
    /// <summary>The id a prompt or document starts with: <paramref name="bos"/>, else <paramref name="eos"/> (GPT-2 convention), else none.</summary>
    public static int? StartId(int? bos, int? eos) => bos ?? eos;

    /// <summary>A prompt or scored document: <c>[start] + ids</c> (no start id when <paramref name="start"/> is null).</summary>
    public static int[] Prompt(IReadOnlyList<int> ids, int? start)
    {
        ArgumentNullException.ThrowIfNull(ids);
        return start is { } s ? [s, .. ids] : [.. ids];
    }

    /// <summary>Appends one training document to <paramref name="stream"/>: <c>[start] + ids + [eos when it differs from start]</c>.</summary>
    public static void Append(List<int> stream, IReadOnlyList<int> ids, int? start, int? eos)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(ids);
        if (start is { } s) stream.Add(s);
        stream.AddRange(ids);
        if (eos is { } e && e != start) stream.Add(e);
    }
}
