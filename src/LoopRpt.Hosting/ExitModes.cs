using System.Globalization;
using LoopRpt.Model;

namespace LoopRpt.Hosting;

/// <summary>Parses exit rules written in configuration: <c>last</c>, <c>expected</c>, <c>q:0.5</c>, <c>step:N</c>.</summary>
public static class ExitModes
{
    /// <summary>The rule named by <paramref name="text"/>; <see cref="ArgumentException"/> naming the accepted forms otherwise.</summary>
    public static ExitMode Parse(string text)
    {
        var t = (text ?? "").Trim().ToLowerInvariant();
        if (t == "last") return ExitMode.Last;
        if (t == "expected") return ExitMode.Expected;
        var parts = t.Split(':', 2);
        if (parts.Length == 2 && parts[0] == "q" && double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var q) && q is >= 0 and <= 1)
            return ExitMode.Q(q);
        if (parts.Length == 2 && parts[0] == "step" && int.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var k) && k >= 0)
            return ExitMode.Fixed(k);
        throw new ArgumentException($"'{text}' is not an exit rule; expected 'last', 'expected', 'q:Q' with Q in [0, 1], or 'step:N' with N >= 0.", nameof(text));
    }
}
