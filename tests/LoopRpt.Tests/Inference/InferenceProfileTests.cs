using LoopRpt.Inference;
using LoopRpt.Model;

namespace LoopRpt.Tests.Inference;

/// <summary>
/// The profile's sections are counted where the code runs them: the counts follow from the model's shape and the exit
/// rule (layers × loops layer sections, one final norm and one exit section per loop), whatever the machine's speed.
/// </summary>
public class InferenceProfileTests
{
    [Fact]
    public void ScoringAtFullDepthCountsEverySectionOncePerLayerPass()
    {
        using var lm = TestUtil.TinyModel(loops: 3);
        var scorer = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Last });
        var ids = TestUtil.RandomIds(2, 10, 64, seed: 3);
        using (scorer.Score(ids)) { }                                               // warm-up outside any profile: not counted

        InferenceProfile profile;
        using (profile = InferenceProfile.Begin())
        using (scorer.Score(ids)) { }
        var s = profile.Sections.ToDictionary(x => x.Name);
        int passes = lm.Config.NumHiddenLayers * lm.Config.TotalUtSteps;           // 2 layers × 3 loops
        foreach (var name in new[] { "qkv", "attention", "o_proj", "mlp" }) Assert.Equal(passes, s[name].Calls);
        Assert.Equal(3, s["final_norm"].Calls);
        Assert.Equal(3, s["exit"].Calls);
        Assert.Equal(1, s["embed"].Calls);
        Assert.Equal(1, s["lm_head"].Calls);                                        // 20 states fit one read-out block
        Assert.Equal("other", profile.Sections[^1].Name);
        var inside = profile.Sections.Where(x => x.Name != "other").Sum(x => x.Time.Ticks);
        Assert.True(inside <= profile.Elapsed.Ticks, $"sections {inside} ticks exceed the elapsed {profile.Elapsed.Ticks}");
        Tolerance.AssertClose(profile.Elapsed.Ticks, inside + profile.Sections[^1].Time.Ticks, absolute: 1.0);   // other = elapsed − sections (tick rounding)

        // Closed: later work is not counted.
        using (scorer.Score(ids)) { }
        Assert.Equal(passes, profile.Sections.Single(x => x.Name == "qkv").Calls);
        Assert.Contains("| qkv |", profile.ToMarkdown());
    }

    [Fact]
    public void EarlyExitsRunFewerLayerPassesAndNestedProfilesRestoreTheOuterOne()
    {
        using var lm = TestUtil.TinyModel(loops: 4);
        using (TorchSharp.torch.no_grad()) lm.Backbone.early_exit_gate.bias!.fill_(20);   // λ ≈ 1: every token exits after loop 1
        var scorer = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(0.5) });
        var ids = TestUtil.RandomIds(1, 8, 64, seed: 4);
        using var outer = InferenceProfile.Begin();
        InferenceProfile inner;
        using (inner = InferenceProfile.Begin())
        using (scorer.Score(ids)) { }
        using (scorer.Score(ids)) { }                                               // counted by the outer profile only
        int layers = lm.Config.NumHiddenLayers;
        Assert.Equal(layers, inner.Sections.Single(x => x.Name == "mlp").Calls);    // one loop ran
        Assert.Equal(layers, outer.Sections.Single(x => x.Name == "mlp").Calls);
    }
}
