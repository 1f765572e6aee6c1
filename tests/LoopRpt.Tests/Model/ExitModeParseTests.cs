using System.Globalization;
using LoopRpt.Model;

namespace LoopRpt.Tests.Model;

public class ExitModeParseTests
{
    public static TheoryData<ExitMode> Modes => new()
    {
        ExitMode.Last, ExitMode.Expected, ExitMode.Q(0), ExitMode.Q(0.25), ExitMode.Q(1), ExitMode.Q(0.1 + 0.2), ExitMode.Fixed(0), ExitMode.Fixed(7),
    };

    [Theory]
    [MemberData(nameof(Modes))]
    public void WhatToStringPrintsParsesBackToTheSameRule(ExitMode mode)
    {
        // bitwise: q is printed in round-trip form and parsed back, not computed
        Assert.Equal(mode, ExitMode.Parse(mode.ToString()));
        Assert.True(ExitMode.TryParse(mode.ToString().ToUpperInvariant(), out var again));
        Assert.Equal(mode, again);
    }

    [Fact]
    public void ToStringIsTheSameInEveryCulture()
    {
        var saved = CultureInfo.CurrentCulture;
        try
        {
            CultureInfo.CurrentCulture = CultureInfo.GetCultureInfo("de-DE");
            Assert.Equal("q-exit(q=0.25)", ExitMode.Q(0.25).ToString());
            Assert.Equal(ExitMode.Q(0.25), ExitMode.Parse(ExitMode.Q(0.25).ToString()));   // bitwise: printed and parsed back
        }
        finally
        {
            CultureInfo.CurrentCulture = saved;
        }
    }

    [Theory]
    [InlineData("last", "last")]
    [InlineData(" Expected ", "expected")]
    [InlineData("q:0.25", "q-exit(q=0.25)")]
    [InlineData("Q:1", "q-exit(q=1)")]
    [InlineData("step:2", "fixed(step=2)")]
    [InlineData("q-exit(q=0.5)", "q-exit(q=0.5)")]
    [InlineData("fixed(step=3)", "fixed(step=3)")]
    public void ConfigurationAndPrintedFormsParse(string text, string expected) => Assert.Equal(expected, ExitMode.Parse(text).ToString());

    [Theory]
    [InlineData("q:1.5")]
    [InlineData("step:-1")]
    [InlineData("first")]
    [InlineData("q:")]
    [InlineData("q-exit(q=0.5")]
    [InlineData("fixed(step=x)")]
    [InlineData("")]
    public void BadRulesNameTheAcceptedForms(string text)
    {
        Assert.False(ExitMode.TryParse(text, out var none));
        Assert.Null(none);
        var e = Assert.Throws<ArgumentException>(() => ExitMode.Parse(text));
        Assert.Contains($"'{text}' is not an exit rule", e.Message);
    }
}
