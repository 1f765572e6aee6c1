using LoopRpt.Tokenization;

namespace LoopRpt.AI;

/// <summary>
/// Turns generated tokens into text deltas for streaming: decodes the tokens so far, holds back a trailing incomplete
/// UTF-8 sequence (decoded as U+FFFD until its last byte arrives) and any tail that could be the start of a stop
/// string, and ends the text where a stop string appears (the stop string itself is not part of the reply).
/// </summary>
internal sealed class TextStream(TextCodec codec, IReadOnlyList<string> stopStrings)
{
    private readonly List<int> _ids = [];
    private int _emitted;

    /// <summary>The reply so far (cut before a stop string once one was seen).</summary>
    public string Text { get; private set; } = "";

    /// <summary>True once a stop string was generated.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Adds a token; returns the text that can be shown now (may be empty).</summary>
    public string Add(long token)
    {
        if (Stopped) return "";
        _ids.Add((int)token);
        var text = codec.Decode(_ids);
        foreach (var stop in stopStrings)
        {
            int at = text.IndexOf(stop, StringComparison.Ordinal);
            if (at < 0) continue;
            Stopped = true;
            Text = text[..at];
            return Take(Text.Length);
        }
        Text = text;
        int safe = text.Length;
        while (safe > _emitted && text[safe - 1] == '\uFFFD') safe--;
        foreach (var stop in stopStrings)
            for (int k = Math.Min(stop.Length - 1, safe - _emitted); k > 0; k--)
                if (string.CompareOrdinal(text, safe - k, stop, 0, k) == 0)
                {
                    safe -= k;
                    break;
                }
        return Take(safe);
    }

    /// <summary>Whatever was held back, at the end of generation.</summary>
    public string Flush() => Take(Text.Length);

    private string Take(int upTo)
    {
        if (upTo <= _emitted) return "";
        var delta = Text[_emitted..upTo];
        _emitted = upTo;
        return delta;
    }
}
