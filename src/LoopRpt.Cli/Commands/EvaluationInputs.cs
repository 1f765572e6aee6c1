using LoopRpt.Tokenization;

namespace LoopRpt.Cli.Commands;

/// <summary>Held-out text → one token stream, documents joined as in training (<see cref="DocumentTokens"/>).</summary>
internal static class EvaluationInputs
{
    public static int[] Stream(IReadOnlyList<string> docs, TextCodec codec, int vocabSize, long maxTokens, int window)
    {
        var stream = new List<int>();
        foreach (var d in docs)
        {
            codec.AppendDocument(stream, d);
            if (maxTokens > 0 && stream.Count >= maxTokens) break;
        }
        if (maxTokens > 0 && stream.Count > maxTokens) stream.RemoveRange((int)maxTokens, stream.Count - (int)maxTokens);
        if (stream.Count < window + 1)
            throw CliException.Input($"The evaluation text has {stream.Count} tokens; one window of --seq-len {window} needs {window + 1}. Add text or lower --seq-len.");
        foreach (var id in stream)
            if (id >= vocabSize) throw CliException.Model($"Token id {id} is outside the model's vocabulary [0, {vocabSize}): the tokenizer does not match the model.");
        return [.. stream];
    }
}
