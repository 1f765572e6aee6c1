using LoopRpt.MLNet;
using LoopRpt.MLNet.Persistence;

namespace LoopRpt.Tests.MLNet;

public class TwinColumnTests
{
    [Fact]
    public void ComputeFractionKeepsTheInternalNameModelsWereSavedWith()
    {
        // Zips saved while the column was called ComputeRatio copy and drop "__LoopRpt_Out_ComputeRatio": the scorer
        // mapping must still write that name for them to load.
        Assert.Equal("__LoopRpt_Out_ComputeRatio", Cols.OutputOf(ScoreColumns.ComputeFraction));
        Assert.Equal("__LoopRpt_Out_ComputeRatio", Cols.OutComputeFraction);
        Assert.All(ScoreColumns.All.Where(c => c != ScoreColumns.ComputeFraction), c => Assert.Equal(Cols.Out + c, Cols.OutputOf(c)));
        Assert.Equal(ScoreColumns.All.Length, ScoreColumns.All.Select(Cols.OutputOf).Distinct().Count());
    }
}
